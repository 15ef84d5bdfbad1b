//! HELP text of the messages worker's own metrics, in one place (the shared ones are described
//! by `switchboard::telemetry`). `docs/metrics.md` lists them with their labels.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Describes every metric the messages worker records. Called once at the start of
/// [`crate::run`].
pub fn describe() {
    describe_gauge!(
        "messages_shards_owned",
        "Chat shards this copy consumes now (16 in all, shared between copies)."
    );
    describe_counter!("messages_stored_total", "Chat messages stored.");
    describe_counter!(
        "messages_expired_total",
        "Chat commands dropped unhandled because their sender had already been answered timeout."
    );
    describe_counter!(
        "messages_refused_total",
        "Chat commands the database refused for good: answered invalid and dead-lettered."
    );
    describe_histogram!("messages_batch_seconds", "Time to store one batch of chat commands, in seconds.");
    describe_histogram!("messages_batch_size", "Chat commands stored in one batch.");
    describe_histogram!(
        "messages_batch_shards",
        "Shards whose batches were committed together in one transaction."
    );
}
