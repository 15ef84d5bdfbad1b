//! `switchboard-edge`: the Socket.IO server for clients (websocket and long-polling), the HTTP
//! ingress for backends, and health and metrics, all on `WEBSOCKET_PORT` (docs/reference.md, Processes).
//!
//! Following a connection through the modules (each does one thing, and none imports another
//! that imports it back, directly or not: `tests/modules.rs` checks it):
//! - [`origin`]: the handshake's `Origin` check, before Socket.IO sees the request;
//! - [`socket_io`]: the Socket.IO layer and what a connection may cost before its CONNECT;
//! - [`limits`]: budgets shared by many connections: handshakes per client address, events
//!   per user;
//! - [`auth`]: who is connecting (cookie, `auth.token`, bearer; database or JWT), with
//!   [`lookups`] bounding and batching the session queries;
//! - [`connection`]: admit or refuse, `session`, clean-up;
//! - [`client`]: one socket's state, and the [`Turn`](client::Turn) that keeps its events in
//!   order;
//! - [`bindings`]: this edge's queue and the rooms it is bound to, counted per local socket;
//! - [`events`]: client events, one module per family, behind one ack/validation wrapper
//!   ([`events::handler`]);
//! - [`rooms`]: conversation rooms: join, leave, and closing one on every edge;
//! - [`typing`]: typing indicators and their expiry;
//! - [`admission`]: how many chat commands may wait for a shard before new ones are refused;
//! - [`inbound`]: the edge queue's consumer, one module per kind it carries (deliveries,
//!   closed conversations, users to disconnect);
//! - [`inbox`]: the waiting notifications asked for at connect, and the receipts of the
//!   notifications a socket got;
//! - [`ingress`]: `/api/v1/*` for backends;
//! - [`presence`]: what this edge tells the presence worker about its users;
//! - [`app`]: what every handler shares.
//!
//! What a connection may cost before it is authenticated, and what bounds it: a handshake
//! without CONNECT lives `CONNECT_TIMEOUT_MS`; binary packets close it; handshakes and
//! CONNECTs per client address are budgeted (`HANDSHAKE_RATE_PER_SEC` / `HANDSHAKE_BURST`,
//! [`limits`]); session queries run `AUTH_LOOKUPS_IN_FLIGHT` at a time, shared by the
//! handshakes that wait ([`lookups`]); a refused token is refused again without a query for
//! `AUTH_REFUSAL_TTL_MS` ([`auth`]). After it: `MAX_SOCKETS_PER_USER` sockets per user, and
//! events budgeted per socket (`RATE_LIMIT_PER_SEC` / `RATE_LIMIT_BURST`) and per user across
//! their sockets (`USER_RATE_LIMIT_PER_SEC` / `USER_RATE_LIMIT_BURST`).
//!
//! Shutdown (SIGTERM): the HTTP server stops accepting, the bus hears that this edge's users
//! are leaving (`edge.stopping`), every socket is closed, the queue is deleted, and the process
//! exits within `SHUTDOWN_GRACE_MS`.

#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod auth;
pub mod bindings;
pub mod client;
pub mod connection;
pub mod events;
pub mod inbound;
pub mod inbox;
pub mod ingress;
pub mod limits;
pub mod lookups;
pub mod origin;
pub mod presence;
pub mod rooms;
pub mod socket_io;
pub mod telemetry;
pub mod typing;

use std::{sync::Arc, time::Duration};

use switchboard::{
    Config, Role, Shutdown,
    bus::{Durability, Route, Shard},
    config::{AllowedOrigins, AuthMode},
    contract::bus::EdgeStopping,
    service::Process,
};

use crate::{
    admission::Admission, app::App, auth::Authenticator, bindings::Bindings, inbound::Inbound,
    inbox::Flusher, limits::Limits,
};

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    telemetry::describe();
    let origins = config.origins()?;
    if origins == AllowedOrigins::Any {
        tracing::warn!(
            "ALLOWED_ORIGINS=*: pages on any origin may connect, and cross-origin requests get \
             CORS without credentials (no cookie); in production, list your origins"
        );
    }
    let with_database = config.auth_mode == AuthMode::Database;
    let process = Process::start(Role::Edge, config, shutdown, with_database).await?;
    let (transitions, transitions_out) = tokio::sync::mpsc::unbounded_channel();
    let auth = Arc::new(Authenticator::new(&process.config, process.database.clone())?);
    let bindings = Arc::new(Bindings::new(transitions));
    let inbox = Flusher::start(process.bus.clone(), bindings.clone());
    let app = Arc::new(App {
        auth: auth.clone(),
        ingress_keys: process.config.ingress_keys(),
        config: process.config.clone(),
        bus: process.bus.clone(),
        bindings: bindings.clone(),
        inbox: inbox.clone(),
        admission: Admission::new(process.config.chat_inflight_per_shard),
        limits: Arc::new(Limits::new(&process.config)),
        shards: Shard::all()
            .map(|shard| process.bus.request_batcher(Route::shard(shard), process.config.ack_timeout()))
            .collect(),
    });
    app.limits.start(&process.shutdown);
    let (socket_io, io) = socket_io::build(app.clone());
    Inbound { io: io.clone(), bus: process.bus.clone(), bindings: bindings.clone(), auth, inbox }
        .start(&process.shutdown);
    presence::start(
        process.bus.clone(),
        bindings.clone(),
        transitions_out,
        Duration::from_millis(process.config.presence_report_interval_ms),
        &process.shutdown,
    );
    let routes = socket_io
        .merge(ingress::router(app.clone()))
        .layer(axum::middleware::from_fn_with_state(Arc::new(origins), origin::check));

    let stopping = process.shutdown.clone();
    process.shutdown.spawn(async move {
        stopping.triggered().await;
        say_goodbye(&app).await;
        // The queue goes as a whole (deleted, or with the connection): the sockets closed next
        // unbind nothing one by one, which would cost the broker one round trip per user
        // while their clients reconnect elsewhere.
        app.bindings.closing();
        // Closing every socket lets clients reconnect to another edge at once instead of
        // waiting for a ping timeout.
        io.close().await;
    });
    let readiness = process.readiness().check("deliveries", move || {
        let ready = bindings.is_ready();
        async move { if ready { Ok(()) } else { Err("the delivery queue is not consuming".to_owned()) } }
    });
    process.serve_with(routes, readiness).await
}

/// Tells the bus that this edge's users are leaving, so presence need not wait for the edge's
/// reports to stop. Bounded: a broker that is down must not hold up the shutdown.
async fn say_goodbye(app: &App) {
    let users = app.bindings.users();
    let goodbye = EdgeStopping { edge_id: app.bindings.edge_id, users };
    let publish = app.bus.publish(&goodbye, Durability::Confirmed);
    match tokio::time::timeout(Duration::from_secs(2), publish).await {
        Ok(Ok(())) => tracing::info!(users = goodbye.users.len(), "told the bus this edge is stopping"),
        Ok(Err(error)) => tracing::warn!(%error, "could not announce the shutdown"),
        Err(_) => tracing::warn!("could not announce the shutdown in time"),
    }
}
