//! Admitting a socket (contract section 3).
//!
//! The connect middleware runs before the socket exists for the client: it authenticates,
//! and a refusal becomes `connect_error` with message `unauthorized` (the reason is logged,
//! never sent). Only when the middleware succeeds does the client get `connect`, and the
//! handler then sends `session`.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::{
    SocketIo,
    extract::{SocketRef, State, TryData},
    handler::ConnectHandler,
};
use switchboard::{
    Config,
    contract::{
        UserId,
        server::{ServerEvent, Session},
    },
};

use crate::auth::{Authenticator, Refusal};

/// The `connect_error` messages a client can see.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefused {
    /// No, unknown, expired or malformed session.
    #[error("unauthorized")]
    Unauthorized,
    /// The session could not be checked (database down); retrying later may work.
    #[error("unavailable")]
    Unavailable,
}

/// The handshake's `auth` object; only `token` is read.
#[derive(Deserialize)]
struct HandshakeAuth {
    token: Option<String>,
}

/// Builds the Socket.IO routes (at `/socket.io/`) and the server's handle.
pub fn build(config: &Config, auth: Arc<Authenticator>) -> (axum::Router, SocketIo) {
    let (service, io) = SocketIo::builder()
        .max_payload(config.max_frame_bytes)
        .ws_max_message_size(usize::try_from(config.max_frame_bytes).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(config.max_frame_bytes).unwrap_or(usize::MAX))
        .with_state(auth)
        .build_svc();
    io.ns("/", on_connect.with(authenticate));
    (axum::Router::new().route_service("/socket.io/", service), io)
}

async fn authenticate(
    socket: SocketRef,
    State(auth): State<Arc<Authenticator>>,
    TryData(handshake): TryData<HandshakeAuth>,
) -> Result<(), ConnectRefused> {
    let auth_token = handshake.ok().and_then(|h| h.token);
    let token = auth.token(&socket.req_parts().headers, auth_token.as_deref());
    match auth.authenticate(token).await {
        Ok(user) => {
            socket.extensions.insert(user);
            Ok(())
        }
        Err(Refusal::Unavailable(error)) => {
            tracing::warn!(%error, "cannot check a session; refusing the connection as unavailable");
            metrics::counter!("edge_connect_refused_total", "reason" => "unavailable").increment(1);
            Err(ConnectRefused::Unavailable)
        }
        Err(refusal) => {
            tracing::info!(reason = %refusal, "refused a connection");
            metrics::counter!("edge_connect_refused_total", "reason" => "unauthorized").increment(1);
            Err(ConnectRefused::Unauthorized)
        }
    }
}

async fn on_connect(socket: SocketRef) {
    let Some(user) = socket.extensions.get::<UserId>() else { return };
    metrics::counter!("edge_connects_total").increment(1);
    let session = Session { user_id: user, server_time: chrono::Utc::now() };
    if let Err(error) = socket.emit(Session::NAME, &session) {
        tracing::debug!(%error, "socket left before its session event");
    }
}
