//! HELP text of the notifier's own metrics, in one place (the shared ones are described by
//! `switchboard::telemetry`). `docs/metrics.md` lists them with their labels.

use metrics::{describe_counter, describe_histogram};

/// Describes every metric the notifier records. Called once at the start of [`crate::run`].
pub fn describe() {
    describe_counter!(
        "notifier_matches_total",
        "Matches announced (conversation, notifications and match:new sent)."
    );
    describe_counter!("notifier_unmatches_total", "Unmatches handled.");
    describe_counter!(
        "notifier_pushed_total",
        "Notifications sent to users' sockets, at once or on their next connect."
    );
    describe_counter!(
        "notifier_delivered_total",
        "Notifications marked delivered after an edge reported them received."
    );
    describe_histogram!(
        "notifier_inbox_check_batch_size",
        "Users asked about in one query for undelivered notifications (inbox flushes gathered)."
    );
}
