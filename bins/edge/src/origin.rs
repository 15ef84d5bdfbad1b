//! The `Origin` check on Socket.IO handshakes (contract section 2, `ALLOWED_ORIGINS`).
//!
//! Cookie authentication makes cross-site socket hijacking the main web risk: a page on
//! another site can open a socket that carries our user's cookie. Browsers always send
//! `Origin` on websocket upgrades and cross-origin XHR, so refusing unlisted origins with 403
//! closes that door for both transports. Clients that send no `Origin` (servers, mobile apps)
//! cannot carry a victim's cookie and are let through.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use switchboard::config::AllowedOrigins;

pub async fn check(State(origins): State<Arc<AllowedOrigins>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/socket.io") {
        let origin = request.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("\u{0}"));
        if !origins.allows(origin) {
            tracing::info!(origin = ?origin, "refused a handshake from a foreign origin");
            metrics::counter!("edge_connect_refused_total", "reason" => "origin").increment(1);
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    next.run(request).await
}
