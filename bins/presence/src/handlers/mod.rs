//! The presence worker's one input, `presence.events`, read in order by one copy at a time: each
//! delivery decodes into [`PresenceInput`] and is dispatched here (`presence_input`) to the
//! module named after its kind, which applies it to the state ([`crate::state`]) and says what
//! to announce.
//!
//! | kind | handler |
//! | --- | --- |
//! | `presence.change` | [`presence_change`] |
//! | `presence.changes` | [`presence_changes`] |
//! | `edge.report` | [`edge_report`] |
//! | `edge.stopping` | [`edge_stopping`] |
//! | `presence.query` | [`presence_lookup`] |
//! | `conversation.opened` | [`conversation_opened`] |

pub mod conversation_opened;
pub mod edge_report;
pub mod edge_stopping;
pub mod presence_change;
pub mod presence_changes;
pub mod presence_lookup;

use std::sync::Arc;

use switchboard::bus::{Incoming, Outcome, queues::PresenceInput};
use tokio::time::Instant;

use crate::Worker;

/// One input, in queue order. Never waits on I/O: announcements and query answers are
/// handed to tasks, so the input keeps flowing.
pub(crate) fn presence_input(worker: &Arc<Worker>, incoming: Incoming) -> Outcome {
    let now = Instant::now();
    worker.state().heard(now);
    let input = match incoming.decode_inbound::<PresenceInput>() {
        Ok(envelope) => envelope.data,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    match input {
        PresenceInput::PresenceChange(change) => presence_change::handle(worker, change, now),
        PresenceInput::PresenceChanges(changes) => presence_changes::handle(worker, changes, now),
        PresenceInput::EdgeReport(report) => edge_report::handle(worker, report, now),
        PresenceInput::EdgeStopping(stopping) => edge_stopping::handle(worker, stopping, now),
        PresenceInput::ConversationOpened(opened) => conversation_opened::handle(worker, opened),
        PresenceInput::PresenceLookup(lookup) => presence_lookup::handle(worker, lookup, &incoming),
    }
    let (online, warm) = {
        let state = worker.state();
        (state.online_count(), state.is_warm(now))
    };
    metrics::gauge!("presence_users_online").set(online as f64);
    metrics::gauge!("presence_warm").set(if warm { 1.0 } else { 0.0 });
    Outcome::Ack
}
