//! `presence.changes`: several of one edge's changes in one message, in the order they
//! happened (what the edge saw while its last change was on its way). Each is applied as a
//! `presence.change` of its own ([`presence_change`](super::presence_change)).

use switchboard::contract::bus::PresenceChanges;
use tokio::time::Instant;

use crate::Worker;

pub(crate) fn handle(worker: &Worker, changes: PresenceChanges, now: Instant) {
    for change in changes.changes {
        super::presence_change::handle(worker, change, now);
    }
}
