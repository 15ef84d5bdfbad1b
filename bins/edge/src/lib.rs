//! `switchboard-edge`: the Socket.IO server for clients (websocket and long-polling), the HTTP
//! ingress for backends, and health and metrics, all on `WEBSOCKET_PORT` (contract section 1).
//!
//! Layout, following a connection:
//! - [`origin`]: the handshake's `Origin` check, before Socket.IO sees the request;
//! - [`auth`]: who is connecting (cookie, `auth.token`, bearer; database or JWT);
//! - [`connection`]: the connect middleware and handler: refuse or admit, then `session`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod connection;
pub mod origin;

use std::sync::Arc;

use switchboard::{Config, Role, Shutdown, config::AuthMode, service::Process};

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let origins = config.origins()?;
    let with_database = config.auth_mode == AuthMode::Database;
    let process = Process::start(Role::Edge, config, shutdown, with_database).await?;
    let auth = Arc::new(auth::Authenticator::new(&process.config, process.database.clone())?);
    let (socket_io, io) = connection::build(&process.config, auth);
    let routes = socket_io.layer(axum::middleware::from_fn_with_state(Arc::new(origins), origin::check));
    let closing = io.clone();
    let shutdown = process.shutdown.clone();
    tokio::spawn(async move {
        shutdown.triggered().await;
        // Closing every socket lets clients reconnect elsewhere at once instead of waiting for
        // a ping timeout; the HTTP server stops accepting in the meantime.
        closing.close().await;
    });
    process.serve(routes).await
}
