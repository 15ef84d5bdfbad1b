//! Admitting a socket and letting it go (docs/reference.md, Connecting).
//!
//! The connect middleware runs before the client is told it is connected: it authenticates
//! (a refusal becomes `connect_error` `unauthorized`; the reason is logged, never sent), then
//! binds the user's deliveries to this edge's queue and joins the socket to `user:<id>`. Only
//! then does the client get `connect`, so nothing addressed to the user after that is lost.
//! The connect handler sends `session` and asks for the user's waiting notifications (see
//! [`inbox`](crate::inbox)); the event families are registered by the middleware, before the
//! client can emit; the disconnect handler releases the socket's bindings.
//!
//! Before authentication a connection costs little and not for long: binary packets (which
//! the contract does not use) close it at once instead of being gathered, and one that has
//! not sent its CONNECT within `CONNECT_TIMEOUT_MS` is closed. Handshakes and CONNECTs from
//! one client address share a budget (`HANDSHAKE_RATE_PER_SEC`, see [`crate::limits`]): past
//! it a handshake gets HTTP 429 and a CONNECT `rate_limited`, before any session lookup; and
//! the lookups themselves are bounded and shared ([`crate::lookups`]), a refused token
//! remembered ([`crate::auth`]). After authentication, one user has at most
//! `MAX_SOCKETS_PER_USER` sockets on an edge, and a client that leaves while it is being
//! admitted leaves nothing behind (see `release`).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use socketioxide::{
    ParserConfig, SocketIo,
    extract::{SocketRef, State, TryData},
    handler::{ConnectHandler, FromMessageParts},
};
use switchboard::{
    Config,
    contract::{
        ConversationId, Room, UserId,
        server::{ServerEvent, Session},
    },
    sync::lock,
};
use tokio::{sync::Notify, task::AbortHandle};

use crate::{App, auth::Refusal, events};

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

/// What the edge knows about one connected socket, kept in its extensions.
pub struct Client {
    pub user: UserId,
    limiter: DefaultDirectRateLimiter,
    /// The conversations this socket joined (and so the room bindings it holds).
    joined: Mutex<HashSet<ConversationId>>,
    /// The pending expiry of each conversation this socket is typing in.
    typing: Mutex<HashMap<ConversationId, AbortHandle>>,
    /// Hands out turns in the order the socket's events arrive.
    order: Arc<Order>,
    /// Set by whoever releases what `admit` took (see [`release`]), so it is released once.
    released: std::sync::atomic::AtomicBool,
}

impl Client {
    fn new(user: UserId, config: &Config) -> Self {
        let per_second = NonZeroU32::new(config.rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            user,
            limiter: RateLimiter::direct(quota),
            joined: Mutex::default(),
            typing: Mutex::default(),
            order: Arc::default(),
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records that the socket is typing in `id` until `expiry` fires (replacing an earlier one).
    pub fn set_typing(&self, id: ConversationId, expiry: AbortHandle) {
        if let Some(previous) = lock(&self.typing).insert(id, expiry) {
            previous.abort();
        }
    }

    /// Forgets the typing state of `id`; true if the socket was typing there.
    pub fn clear_typing(&self, id: ConversationId) -> bool {
        lock(&self.typing).remove(&id).map(|expiry| expiry.abort()).is_some()
    }

    /// Called by the expiry itself: true if it was still the current one.
    pub fn typing_expired(&self, id: ConversationId) -> bool {
        lock(&self.typing).remove(&id).is_some()
    }

    /// Takes one event from the socket's token bucket; false when it is empty.
    pub fn allow_event(&self) -> bool {
        self.limiter.check().is_ok()
    }

    pub fn has_joined(&self, id: ConversationId) -> bool {
        self.joined().contains(&id)
    }

    /// Records a join; false if it was already recorded.
    pub fn mark_joined(&self, id: ConversationId) -> bool {
        self.joined().insert(id)
    }

    /// Records a leave; false if the socket had not joined.
    pub fn mark_left(&self, id: ConversationId) -> bool {
        self.joined().remove(&id)
    }

    fn joined_now(&self) -> Vec<ConversationId> {
        self.joined().iter().copied().collect()
    }

    fn joined(&self) -> std::sync::MutexGuard<'_, HashSet<ConversationId>> {
        lock(&self.joined)
    }
}

/// The order of one socket's events. Socket.IO hands each event to its own task, so two
/// events of one socket may run in either order; a turn taken while the event is extracted
/// (in arrival order, before the task starts) restores it for the handlers that need it.
#[derive(Default)]
pub struct Order {
    issued: std::sync::atomic::AtomicU64,
    state: Mutex<OrderState>,
    changed: Notify,
}

#[derive(Default)]
struct OrderState {
    /// The turn being served: every earlier one is done.
    serving: u64,
    /// Later turns already done, waiting for the earlier ones.
    done: BTreeSet<u64>,
}

/// One event's place in its socket's order. Dropping it (done, or never needed) lets the next
/// turn proceed.
pub struct Turn {
    order: Arc<Order>,
    number: u64,
}

impl Turn {
    /// Waits until every earlier event of the socket is done with its turn.
    pub async fn wait(&self) {
        loop {
            let changed = self.order.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if lock(&self.order.state).serving == self.number {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = lock(&self.order.state);
        state.done.insert(self.number);
        loop {
            let serving = state.serving;
            if !state.done.remove(&serving) {
                break;
            }
            state.serving = serving + 1;
        }
        drop(state);
        self.order.changed.notify_waiters();
    }
}

impl<A: socketioxide::adapter::Adapter> FromMessageParts<A> for Turn {
    type Error = std::convert::Infallible;
    fn from_message_parts(
        socket: &Arc<socketioxide::socket::Socket<A>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let order = socket.extensions.get::<Arc<Client>>().map(|c| c.order.clone()).unwrap_or_default();
        let number = order.issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Turn { order, number })
    }
}

/// The handshake's `auth` object; only `token` is read.
#[derive(Deserialize)]
struct HandshakeAuth {
    token: Option<String>,
}

/// Builds the Socket.IO routes (at `/socket.io/`) and the server's handle.
pub fn build(app: Arc<App>) -> (axum::Router, SocketIo) {
    let config = &app.config;
    let frame = usize::try_from(config.max_frame_bytes).unwrap_or(usize::MAX);
    let (service, io) = SocketIo::builder()
        .max_payload(config.max_frame_bytes)
        .ws_max_message_size(frame)
        .ws_max_frame_size(frame)
        // Packets queued per socket before emits to it fail: room for a burst of deliveries
        // to a slow client.
        .max_buffer_size(1024)
        // Reads of a websocket are small client events; the default 4 KiB per socket is
        // mostly idle memory.
        .ws_read_buffer_size(WS_READ_BUFFER)
        // Before authentication a connection costs as little as it can, and not for long: the
        // contract has no binary payloads, so a binary packet (whose attachments the parser
        // would otherwise gather, up to 10 MB, before any CONNECT) closes the connection at
        // once; and a connection that has not sent its CONNECT in time is closed.
        .with_parser(ParserConfig::common().max_incoming_binaries(0).max_incoming_binary_buf_size(0))
        .connect_timeout(config.connect_timeout())
        .with_state(app.clone())
        .build_svc();
    io.ns("/", on_connect.with(admit));
    let router = axum::Router::new()
        .route_service("/socket.io/", service)
        .layer(axum::middleware::map_request(detach_request_head))
        .layer(axum::middleware::from_fn_with_state(app.limits.clone(), crate::limits::check_handshake));
    (router, io)
}

const WS_READ_BUFFER: usize = 1024;

/// Copies the request's URI and headers into memory of their own.
///
/// The engine keeps every socket's request head for the socket's whole life. As hyper parses
/// them, the URI and the header values are views into the connection's read buffer (16 KiB),
/// so keeping them keeps the whole buffer: most of an idle socket's memory. axum's
/// `OriginalUri` is another such view, so it is replaced too. Only a request that opens a
/// session (no `sid` yet) is kept; every later poll or upgrade passes untouched.
async fn detach_request_head(mut request: axum::extract::Request) -> axum::extract::Request {
    if request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair.starts_with("sid="))) {
        return request;
    }
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
    let copy_uri = |uri: &Uri| Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone());
    let uri = copy_uri(request.uri());
    if let Some(original) = request.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
        original.0 = copy_uri(&original.0);
    }
    let mut headers = HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name, copy);
    }
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}

async fn admit(
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
    match app.deliveries.add_within(&room, limit).await {
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
    // As in Socket.IO's own servers, a socket is also in a room named by its id: deliveries
    // that leave out the socket that caused them (`except_socket`) exclude that room.
    socket.join(socket.id.to_string());
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

async fn on_connect(socket: SocketRef, State(app): State<Arc<App>>) {
    let Some(client) = socket.extensions.get::<Arc<Client>>() else { return };
    metrics::counter!("edge_connects_total").increment(1);
    let session = Session { user_id: client.user.clone(), server_time: chrono::Utc::now() };
    if let Err(error) = socket.emit(Session::NAME, &session) {
        tracing::debug!(%error, "socket left before its session event");
    }
    // The client is connected now: what the flush pushes finds this socket.
    if app.deliveries.take_unflushed(&client.user).await {
        crate::inbox::flush_inbox(&app.deliveries, &client.user).await;
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
    if client.released.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    metrics::gauge!("edge_sockets_connected").decrement(1.0);
    for conversation in client.joined_now() {
        events::conversations::leave_room(socket, client, &app.deliveries, conversation).await;
    }
    app.deliveries.remove(&Room::User(client.user.clone())).await;
}
