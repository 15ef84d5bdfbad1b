//! The `Origin` check on Socket.IO handshakes (docs/reference.md, Configuration, `ALLOWED_ORIGINS`).
//!
//! Cookie authentication makes cross-site socket hijacking the main web risk: a page on
//! another site can open a socket that carries our user's cookie. Browsers always send
//! `Origin` on websocket upgrades and cross-origin XHR, so refusing unlisted origins with 403
//! closes that door for both transports. Clients that send no `Origin` (servers, mobile apps)
//! cannot carry a victim's cookie and are let through.
//!
//! An allowed origin also gets CORS headers, because a page on another origin (the app on
//! `app.example.com`, the edge on `rt.example.com`) can use long-polling only if the browser
//! is told it may read the answers. Preflights are answered here. A listed origin is echoed
//! with `Access-Control-Allow-Credentials: true`, so the app's own pages may long-poll with the
//! session cookie. Under `ALLOWED_ORIGINS=*` the answer is `Access-Control-Allow-Origin: *`
//! and never credentials: echoing any origin with credentials would let every site on the web
//! read a signed-in user's long-polling answers (their messages and notifications) through a
//! `SameSite=None` cookie. Cross-origin clients then authenticate with `auth.token` instead.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use switchboard::config::AllowedOrigins;

pub async fn check(State(origins): State<Arc<AllowedOrigins>>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/socket.io") {
        return next.run(request).await;
    }
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    if !origins.allows(Some(origin.to_str().unwrap_or("\u{0}"))) {
        tracing::info!(?origin, "refused a handshake from a foreign origin");
        metrics::counter!("edge_connect_refused_total", "reason" => "origin").increment(1);
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow(headers, &origins, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        let asked = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            asked.unwrap_or(HeaderValue::from_static("content-type")),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return response;
    }
    let mut response = next.run(request).await;
    allow(response.headers_mut(), &origins, origin);
    response
}

/// The headers that let a page on `origin` read the answer: for a listed origin, the origin
/// echoed with credentials (browsers refuse `*` together with credentials); for any origin,
/// `*` and no credentials, so a browser shows the answer to a request made without cookies
/// and refuses to show it to one that carried them.
fn allow(headers: &mut HeaderMap, origins: &AllowedOrigins, origin: HeaderValue) {
    match origins {
        AllowedOrigins::Any => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        AllowedOrigins::List(_) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            // The answer differs by origin: a cache must not hand one origin's to another.
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}
