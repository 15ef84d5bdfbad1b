//! `presence.change`: an edge's first socket of a user opened, or its last one closed (per edge
//! and user, not per socket: a second tab costs nothing). An opening is news, announced at once
//! as `user:online` when the user had no socket anywhere (also while warming up; see
//! [`Presence::connected`](crate::state::Presence::connected)); a closing that leaves the user
//! without a socket starts their grace period, and `user:offline` goes out from the clock only
//! once it is over (a reload shows nothing; see
//! [`Presence::disconnected`](crate::state::Presence::disconnected)).

use switchboard::contract::bus::PresenceChange;
use tokio::time::Instant;

use crate::Worker;

pub(crate) fn handle(worker: &Worker, change: PresenceChange, now: Instant) {
    metrics::counter!("presence_changes_total").increment(1);
    worker.decide(|state| {
        if change.online {
            state.connected(change.edge_id, change.user_id, now, change.at).into_iter().collect()
        } else {
            state.disconnected(change.edge_id, &change.user_id, now, change.at);
            Vec::new()
        }
    });
}
