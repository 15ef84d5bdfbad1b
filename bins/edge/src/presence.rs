//! What this edge tells presence (see `switchboard-presence`): a change when its first socket
//! of a user opens or its last one closes, and a report of all its users every
//! `PRESENCE_REPORT_INTERVAL_MS`. Both go out from one task, in the order they happened, so a
//! report never overtakes a change it does not include.

use std::{sync::Arc, time::Duration};

use switchboard::{
    Bus, Shutdown,
    bus::Durability,
    contract::{
        UserId,
        bus::{EdgeReport, PresenceChange},
    },
};
use tokio::sync::mpsc;

use crate::delivery::Deliveries;

/// A user's first socket here opened (`true`) or the last one closed (`false`).
pub type Transition = (UserId, bool);

pub fn start(
    bus: Bus,
    deliveries: Arc<Deliveries>,
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
                    let change = PresenceChange { edge_id: deliveries.edge_id, user_id: user, online, at: chrono::Utc::now() };
                    // Best effort: a change lost here is healed by the next report.
                    if let Err(error) = bus.publish(&change, Durability::Transient).await {
                        tracing::debug!(%error, "a presence change was not sent");
                    }
                }
                _ = reports.tick() => {
                    if !deliveries.is_ready() {
                        continue;
                    }
                    let report = EdgeReport {
                        edge_id: deliveries.edge_id,
                        users: deliveries.users().await,
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
