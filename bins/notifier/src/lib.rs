//! `switchboard-notifier` owns matches and notifications: turns `match.created` into a conversation and notifications, delivers them, keeps them for offline users (contract section 1).
//!
//! This is the process skeleton: it starts, connects to the bus and the database (migrating
//! it), serves `/healthz`, `/readyz` and `/metrics` on `METRICS_PORT`, and stops cleanly on
//! SIGTERM. Its consumers arrive with their features.

#![forbid(unsafe_code)]

use switchboard::{Config, Role, Shutdown, service::Process};

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let process = Process::start(Role::Notifier, config, shutdown, true).await?;
    process.serve(axum::Router::new()).await
}
