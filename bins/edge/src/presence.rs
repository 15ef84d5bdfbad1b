//! What this edge tells presence (see `switchboard-presence`): a change when its first socket
//! of a user opens or its last one closes, and a report of all its users every
//! `PRESENCE_REPORT_INTERVAL_MS`. Both go out from one task, in the order they happened, so a
//! report never overtakes a change it does not include.

use std::{sync::Arc, time::Duration};

use switchboard::{
    Bus, Shutdown,
    bus::Durability,
    contract::bus::{EdgeReport, PresenceChange},
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
        loop {
            tokio::select! {
                Some((user, online)) = transitions.recv() => {
                    let change = PresenceChange { edge_id: bindings.edge_id, user_id: user, online, at: chrono::Utc::now() };
                    // Best effort: a change lost here is healed by the next report.
                    if let Err(error) = bus.publish(&change, Durability::Transient).await {
                        tracing::debug!(%error, "a presence change was not sent");
                    }
                }
                _ = reports.tick() => {
                    if !bindings.is_ready() {
                        continue;
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
