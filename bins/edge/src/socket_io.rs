//! The Socket.IO layer (at `/socket.io/`): its limits, and the handshake's request head.
//!
//! Before authentication a connection costs little and not for long: binary packets (which
//! the contract does not use) close it at once instead of being gathered, and one that has
//! not sent its CONNECT within `CONNECT_TIMEOUT_MS` is closed. Handshakes from one client
//! address are budgeted before Socket.IO sees them (`HANDSHAKE_RATE_PER_SEC`, see
//! [`crate::limits`]): past it a handshake gets HTTP 429. Admission itself is
//! [`crate::connection`].

use std::sync::Arc;

use socketioxide::{ParserConfig, SocketIo, handler::ConnectHandler};

use crate::{
    app::App,
    connection::{admit, on_connect},
};

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
        .layer(axum::middleware::map_request_with_state(
            Arc::<str>::from(config.auth_cookie_name.as_str()),
            detach_request_head,
        ))
        .layer(axum::middleware::from_fn_with_state(app.limits.clone(), crate::limits::check_handshake));
    (router, io)
}

const WS_READ_BUFFER: usize = 1024;

/// What a session's request head keeps: the Engine.IO and Socket.IO layers read only the
/// websocket key (to answer the upgrade; hyper's upgrade itself travels in the extensions),
/// and admission only the session's cookie and the `Authorization` header (`crate::auth`); the
/// `Origin` and the client's address were checked before, from the request itself.
const KEPT_HEADERS: [axum::http::HeaderName; 2] =
    [axum::http::header::AUTHORIZATION, axum::http::header::SEC_WEBSOCKET_KEY];

/// Keeps, in memory of its own, only the part of a session's request head that is read after
/// the request.
///
/// The engine keeps every socket's request head for the socket's whole life. As hyper parses
/// them, the URI and the header values are views into the connection's read buffer (16 KiB),
/// so keeping them keeps the whole buffer: most of an idle socket's memory. axum's
/// `OriginalUri` is another such view, so it is replaced too. Of the headers, only those read
/// later are kept ([`KEPT_HEADERS`], and of the cookies only the session's): a browser's
/// user agent, languages and other sites' cookies would otherwise stay with every idle
/// connection. Only a request that opens a session (no `sid` yet) is kept; every later poll
/// or upgrade passes untouched.
async fn detach_request_head(
    axum::extract::State(cookie_name): axum::extract::State<Arc<str>>,
    mut request: axum::extract::Request,
) -> axum::extract::Request {
    if request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair.starts_with("sid="))) {
        return request;
    }
    use axum::http::{HeaderMap, HeaderValue, Uri, header::COOKIE};
    let copy_uri = |uri: &Uri| Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone());
    let uri = copy_uri(request.uri());
    if let Some(original) = request.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
        original.0 = copy_uri(&original.0);
    }
    // Room for what is kept, allocated once.
    let mut headers = HeaderMap::with_capacity(KEPT_HEADERS.len() + 1);
    for name in &KEPT_HEADERS {
        for value in request.headers().get_all(name) {
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
    }
    let session_cookie = request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .find(|pair| pair.split_once('=').is_some_and(|(name, _)| name == &*cookie_name));
    if let Some(mut cookie) = session_cookie.and_then(|pair| HeaderValue::from_str(pair).ok()) {
        cookie.set_sensitive(true);
        headers.append(COOKIE, cookie);
    }
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}
