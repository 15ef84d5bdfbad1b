//! `edge.report`: every `PRESENCE_REPORT_INTERVAL_MS`, an edge lists all its users. The report
//! replaces what we knew of that edge, so a lost change heals here, and it restarts the edge's
//! clock: an edge silent for three of its intervals is taken for dead. While warming up, the
//! users a report lists are taken as known to their contacts (no event: they were online
//! before); see [`Presence::report`](crate::state::Presence::report).

use std::time::Duration;

use switchboard::contract::bus::EdgeReport;
use tokio::time::Instant;

use crate::Worker;

pub(crate) fn handle(worker: &Worker, report: EdgeReport, now: Instant) {
    let interval = Duration::from_millis(report.interval_ms.max(100));
    worker.decide(|state| state.report(report.edge_id, report.users, interval, now));
}
