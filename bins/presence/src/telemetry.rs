//! HELP text of the presence worker's own metrics, in one place (the shared ones are described
//! by `switchboard::telemetry`). `docs/metrics.md` lists them with their labels.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Describes every metric the presence worker records. Called once at the start of
/// [`crate::run`].
pub fn describe() {
    describe_gauge!(
        "presence_users_online",
        "Users with at least one socket on any edge, as this copy counts them."
    );
    describe_gauge!(
        "presence_warm",
        "1 once this copy has heard every edge report (after a restart), 0 before: no offline is announced while 0."
    );
    describe_counter!("presence_changes_total", "Connect and disconnect reports received from edges.");
    describe_counter!(
        "presence_announcements_total",
        "Presence events published to users, by event: user:online, user:offline, introduction."
    );
    describe_histogram!(
        "presence_announcement_round_size",
        "Announcements published in one round (decided while the last round was on its way)."
    );
}
