//! Budgets that many connections share, where a per-socket limit would multiply.
//!
//! - Per client address: every Engine.IO handshake (a request that opens a session: HTTP 429
//!   past the budget, before Socket.IO sees it) and every Socket.IO CONNECT (`connect_error`
//!   `rate_limited`, before any session lookup) takes one from `HANDSHAKE_RATE_PER_SEC` /
//!   `HANDSHAKE_BURST`, so an ordinary connection takes two. A CONNECT is counted as well as
//!   the handshake because a client may send CONNECT after CONNECT over one Engine.IO session
//!   (a refused one does not close it). An IPv6 address counts by its /64, which one host
//!   usually has whole. The address is the TCP peer's: behind a proxy or load balancer that
//!   does not keep it, every client shares the proxy's address, so raise the budget or set it
//!   to 0 and limit at the proxy.
//! - Per user: the events of all of one user's sockets on this edge take one each from
//!   `USER_RATE_LIMIT_PER_SEC` / `USER_RATE_LIMIT_BURST`, after the socket's own limit; past
//!   it an event is answered `rate_limited` and has no effect, like the per-socket limit.
//!
//! Both are token buckets of `governor`, keyed. A key whose bucket has refilled is as good as
//! none, and is dropped every [`FORGET_EVERY`], so neither map grows with addresses or users
//! that have gone quiet.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchboard::{Config, Shutdown, contract::UserId};

/// How often keys with a full bucket are forgotten.
pub const FORGET_EVERY: Duration = Duration::from_secs(60);

pub struct Limits {
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    users: Option<DefaultKeyedRateLimiter<UserId>>,
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        Self {
            addresses: config.handshake_limit().map(|(rate, burst)| RateLimiter::keyed(quota(rate, burst))),
            users: config.user_rate_limit().map(|(rate, burst)| RateLimiter::keyed(quota(rate, burst))),
        }
    }

    /// Forgets the keys whose bucket is full again, every [`FORGET_EVERY`], until shutdown.
    pub fn start(self: &Arc<Self>, shutdown: &Shutdown) {
        let limits = self.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            let mut every = tokio::time::interval(FORGET_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.triggered() => return,
                    _ = every.tick() => {}
                }
                if let Some(keyed) = &limits.addresses {
                    keyed.retain_recent();
                    keyed.shrink_to_fit();
                }
                if let Some(keyed) = &limits.users {
                    keyed.retain_recent();
                    keyed.shrink_to_fit();
                }
            }
        });
    }

    /// Takes one handshake or CONNECT from `peer`'s budget; false when it is spent.
    pub fn allow_handshake(&self, peer: IpAddr) -> bool {
        self.addresses.as_ref().is_none_or(|keyed| keyed.check_key(&address_key(peer)).is_ok())
    }

    /// Takes one event from `user`'s budget on this edge; false when it is spent.
    pub fn allow_user_event(&self, user: &UserId) -> bool {
        self.users.as_ref().is_none_or(|keyed| keyed.check_key(user).is_ok())
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(NonZeroU32::new(burst).unwrap_or(per_second))
}

/// The key of a client address: an IPv4 address as it is (also when mapped into IPv6), an
/// IPv6 address by its /64.
fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// The TCP peer of a request, when the server recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip())
}

/// Middleware on `/socket.io/`: a request that opens an Engine.IO session (no `sid` yet; not a
/// CORS preflight) takes one from its address's budget, or is answered 429.
pub async fn check_handshake(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    let opens_session = request.method() != axum::http::Method::OPTIONS
        && !request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair.starts_with("sid=")));
    if opens_session
        && let Some(peer) = peer(request.extensions())
        && !limits.allow_handshake(peer)
    {
        metrics::counter!("edge_handshakes_refused_total", "reason" => "rate_limited").increment(1);
        let body = serde_json::json!({
            "error": { "code": "rate_limited", "message": "too many connection attempts from this address" }
        });
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], axum::Json(body))
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::address_key;

    #[test]
    fn an_ipv6_address_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let key = |s: &str| address_key(s.parse().expect("an address")).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
