//! Admitting a socket and letting it go (docs/reference.md, Connecting).
//!
//! The connect middleware ([`admit`]) runs before the client is told it is connected: it
//! authenticates (a refusal becomes `connect_error` `unauthorized`; the reason is logged, never
//! sent), then binds the user's deliveries to this edge's queue ([`crate::bindings`]) and joins
//! the socket to `user:<id>`. Only then does the client get `connect`, so nothing addressed to
//! the user after that is lost. The connect handler ([`on_connect`]) sends `session` and asks
//! for the user's waiting notifications (see [`inbox`](crate::inbox)); the event families are
//! registered by the middleware, before the client can emit; the disconnect handler releases
//! the socket's bindings.
//!
//! Handshakes and CONNECTs from one client address share a budget (`HANDSHAKE_RATE_PER_SEC`,
//! see [`crate::limits`]): past it a CONNECT gets `rate_limited`, before any session lookup;
//! the lookups themselves are bounded and shared ([`crate::lookups`]), a refused token
//! remembered ([`crate::auth`]). After authentication, one user has at most
//! `MAX_SOCKETS_PER_USER` sockets on an edge, and a client that leaves while it is being
//! admitted leaves nothing behind (see `release`). What a connection costs before its CONNECT
//! is bounded where the Socket.IO layer is built ([`crate::socket_io`]).

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::extract::{SocketRef, State, TryData};
use switchboard::contract::{
    Room,
    server::{ServerEvent, Session},
};

use crate::{app::App, auth::Refusal, client::Client, events, rooms};

/// The `connect_error` messages a client can see.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefused {
    /// No, unknown, expired or malformed session.
    #[error("unauthorized")]
    Unauthorized,
    /// The session could not be checked, or deliveries cannot be set up (database or broker
    /// down); retrying later may work.
    #[error("unavailable")]
    Unavailable,
    /// The user already has `MAX_SOCKETS_PER_USER` sockets on this edge.
    #[error("too_many_connections")]
    TooManyConnections,
    /// The client's address has spent its budget of handshakes and CONNECTs
    /// (`HANDSHAKE_RATE_PER_SEC` / `HANDSHAKE_BURST`); retrying a second later may work.
    #[error("rate_limited")]
    RateLimited,
}

/// The handshake's `auth` object; only `token` is read.
#[derive(Deserialize)]
pub struct HandshakeAuth {
    token: Option<String>,
}

/// The connect middleware: runs before the client is told it is connected.
pub async fn admit(
    socket: SocketRef,
    State(app): State<Arc<App>>,
    TryData(handshake): TryData<HandshakeAuth>,
) -> Result<(), ConnectRefused> {
    if let Some(peer) = crate::limits::peer(&socket.req_parts().extensions)
        && !app.limits.allow_handshake(peer)
    {
        tracing::info!(%peer, "refused a connection: too many attempts from its address");
        metrics::counter!("edge_connect_refused_total", "reason" => "rate_limited").increment(1);
        return Err(ConnectRefused::RateLimited);
    }
    let auth_token = handshake.ok().and_then(|h| h.token);
    let token = app.auth.token(&socket.req_parts().headers, auth_token.as_deref());
    let user = match app.auth.authenticate(token).await {
        Ok(user) => user,
        Err(Refusal::Unavailable(error)) => {
            tracing::warn!(%error, "cannot check a session; refusing the connection as unavailable");
            metrics::counter!("edge_connect_refused_total", "reason" => "unavailable").increment(1);
            return Err(ConnectRefused::Unavailable);
        }
        Err(refusal) => {
            tracing::info!(reason = %refusal, "refused a connection");
            metrics::counter!("edge_connect_refused_total", "reason" => "unauthorized").increment(1);
            return Err(ConnectRefused::Unauthorized);
        }
    };
    let room = Room::User(user.clone());
    // Each socket has its own rate limit and costs memory: one user's sockets on an edge are
    // bounded, so one session cannot multiply either.
    let limit = usize::try_from(app.config.max_sockets_per_user).unwrap_or(usize::MAX);
    match app.bindings.add_within(&room, limit).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(user = %user, limit, "refused a connection: the user has too many sockets here");
            metrics::counter!("edge_connect_refused_total", "reason" => "too_many_connections").increment(1);
            return Err(ConnectRefused::TooManyConnections);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot bind deliveries; refusing the connection as unavailable");
            metrics::counter!("edge_connect_refused_total", "reason" => "unavailable").increment(1);
            return Err(ConnectRefused::Unavailable);
        }
    }
    socket.join(room.to_string());
    let client = Arc::new(Client::new(user, &app.config));
    socket.extensions.insert(client.clone());
    // The clean-up is registered here, before the client is told it is connected, not in
    // `on_connect`: that runs in a task of its own after the connect packet has gone out, and
    // a client that closes at once would otherwise leave without it, its binding and its
    // presence held forever. (The load generator's presence churn found this.)
    socket.on_disconnect(on_disconnect);
    // The event handlers too: a client may emit as soon as its `connect` fires, which can be
    // before `on_connect`'s task has run, and an event with no handler yet went unanswered
    // (seen as acks that never came, under load).
    events::register(&socket);
    metrics::gauge!("edge_sockets_connected").increment(1.0);
    // A client that left while it was being admitted: socketioxide then fails to send its
    // CONNECT and drops the socket without calling its disconnect handler, so what was taken
    // above would stay (the user bound and online until the edge restarts). The CONNECT goes
    // out as soon as this returns; a socket not connected a moment later never will be.
    tokio::spawn(async move {
        tokio::time::sleep(ADMIT_SETTLES).await;
        if !socket.connected() {
            release(&socket, &client, &app).await;
        }
    });
    Ok(())
}

/// How long after `admit` a socket that will ever be connected surely is.
const ADMIT_SETTLES: std::time::Duration = std::time::Duration::from_secs(1);

/// The connect handler: runs in a task of its own once the client was told it is connected.
pub async fn on_connect(socket: SocketRef, State(app): State<Arc<App>>) {
    let Some(client) = socket.extensions.get::<Arc<Client>>() else { return };
    metrics::counter!("edge_connects_total").increment(1);
    let session = Session { user_id: client.user.clone(), server_time: chrono::Utc::now() };
    if let Err(error) = socket.emit(Session::NAME, &session) {
        tracing::debug!(%error, "socket left before its session event");
    }
    // The client is connected now: what the flush pushes finds this socket.
    if app.bindings.take_unflushed(&client.user) {
        app.inbox.flush(client.user.clone());
    }
}

async fn on_disconnect(socket: SocketRef, State(app): State<Arc<App>>) {
    let Some(client) = socket.extensions.get::<Arc<Client>>() else { return };
    release(&socket, &client, &app).await;
}

/// Gives back what `admit` and the socket's joins took: its conversation rooms' and its user
/// room's bindings. Runs once, from the disconnect handler or from `admit`'s check for a client
/// that left while being admitted, whichever comes first.
async fn release(socket: &SocketRef, client: &Client, app: &App) {
    if !client.take_release() {
        return;
    }
    metrics::gauge!("edge_sockets_connected").decrement(1.0);
    for conversation in client.joined_now() {
        rooms::leave(socket, client, &app.bus, &app.bindings, conversation).await;
    }
    app.bindings.remove(&Room::User(client.user.clone())).await;
}
