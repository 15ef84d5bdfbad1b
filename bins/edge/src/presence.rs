//! What this edge tells presence (see `switchboard-presence`): a change when its first socket
//! of a user opens or its last one closes, and a report of all its users every
//! `PRESENCE_REPORT_INTERVAL_MS`.
//!
//! **Order.** Both go out from one task, on the one publisher channel, in the order they
//! happened: before a report is made, every change already decided is published, so a report
//! never overtakes a change older than itself. (One that did would be applied after the report
//! and undo it for a moment: a user the report shows gone would come back on a stale change.)
//!
//! **Batching.** The changes decided while the last publish was on its way go together, as one
//! `presence.changes` (a lone change as a plain `presence.change`): when thousands of users
//! connect at once (this edge restarted), presence gets a few messages, not one per user, and
//! keeps up.

use std::{sync::Arc, time::Duration};

use switchboard::{
    Bus, Shutdown,
    bus::Durability,
    contract::bus::{EdgeReport, PresenceChange, PresenceChanges},
};
use tokio::sync::mpsc;

use crate::bindings::{Bindings, Transition};

pub fn start(
    bus: Bus,
    bindings: Arc<Bindings>,
    mut transitions: mpsc::UnboundedReceiver<Transition>,
    interval: Duration,
    shutdown: &Shutdown,
) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut reports = tokio::time::interval(interval);
        let mut decided = Vec::with_capacity(PresenceChanges::MAX);
        loop {
            tokio::select! {
                received = transitions.recv_many(&mut decided, PresenceChanges::MAX) => {
                    if received == 0 {
                        return;
                    }
                    publish_changes(&bus, &bindings, &mut decided).await;
                }
                _ = reports.tick() => {
                    if !bindings.is_ready() {
                        continue;
                    }
                    // The changes decided before this report first (`recv_many` does not wait
                    // while some are queued).
                    while !transitions.is_empty() {
                        transitions.recv_many(&mut decided, PresenceChanges::MAX).await;
                        publish_changes(&bus, &bindings, &mut decided).await;
                    }
                    let report = EdgeReport {
                        edge_id: bindings.edge_id,
                        users: bindings.users(),
                        interval_ms: interval.as_millis() as u64,
                    };
                    if let Err(error) = bus.publish(&report, Durability::Transient).await {
                        tracing::debug!(%error, "a presence report was not sent");
                    }
                }
                _ = shutdown.triggered() => return,
            }
        }
    });
}

/// Publishes `decided` (emptied), in one message. Best effort: a change lost here is healed by
/// the next report.
async fn publish_changes(bus: &Bus, bindings: &Bindings, decided: &mut Vec<Transition>) {
    let at = chrono::Utc::now();
    let mut changes: Vec<PresenceChange> = decided
        .drain(..)
        .map(|(user_id, online)| PresenceChange { edge_id: bindings.edge_id, user_id, online, at })
        .collect();
    let sent = match changes.len() {
        0 => return,
        1 => bus.publish(&changes.remove(0), Durability::Transient).await,
        _ => bus.publish(&PresenceChanges { changes }, Durability::Transient).await,
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "presence changes were not sent");
    }
}
