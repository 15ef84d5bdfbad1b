//! `edge.stopping`: an edge is shutting down. Its users lose that edge at once, as if it had
//! gone silent, and those left without a socket go offline after the grace period; see
//! [`Presence::edge_gone`](crate::state::Presence::edge_gone).

use switchboard::contract::bus::EdgeStopping;
use tokio::time::Instant;

use crate::Worker;

pub(crate) fn handle(worker: &Worker, stopping: EdgeStopping, now: Instant) {
    worker.state().edge_gone(stopping.edge_id, now);
}
