//! Who is connecting (docs/reference.md, Connecting).
//!
//! The token comes from, in order: the `AUTH_COOKIE_NAME` cookie, the handshake's
//! `auth.token`, an `Authorization: Bearer` header. In `database` mode it is looked up with
//! `AUTH_SESSION_QUERY` (an operator may point it at their own session table); in `jwt` mode
//! it is an HS256 token with `sub` (the user id), a required `exp`, an `nbf` that has passed
//! when present, and, when `AUTH_JWT_AUDIENCE` is set, an `aud` naming one of its audiences.
//!
//! Successful database lookups are cached so a burst of reconnects does not hammer the session
//! table: for `AUTH_CACHE_TTL_MS`, and never past the session's own expiry when the query
//! returns it as a second column (the default query does), so an expired session is refused
//! at once. The cache holds at most [`CACHE_CAPACITY`] sessions, evicting the least used.
//!
//! Refusals are remembered too, for `AUTH_REFUSAL_TTL_MS` (5 s; `0` turns it off): a token
//! the query found no session for is refused again without a query, so repeating a made-up
//! or expired token costs the database nothing. At most [`REFUSAL_CAPACITY`] are kept, each
//! as a keyed 64-bit hash of the token, so a flood of long made-up tokens costs no more
//! memory than short ones. The price: a session created for a token in the moments after
//! that token was refused is refused until the refusal is forgotten (a host application
//! issues a token before handing it out, so this only shows with a lagging replica).
//!
//! What is left goes to [`crate::lookups`]: a bounded number of queries at once, shared by the
//! handshakes that arrive together.

use std::{
    hash::{BuildHasher, RandomState},
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use switchboard::{Config, config::AuthMode, contract::UserId, db::Database};

use crate::lookups::{Found, Lookups};

/// Why a handshake was refused. Logged, never shown to the client (who sees `unauthorized`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no session token in the cookie, auth.token or Authorization header")]
    NoToken,
    #[error("unknown or expired session")]
    UnknownSession,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the session lookup failed: {0}")]
    Unavailable(String),
}

pub struct Authenticator {
    cookie_name: String,
    method: Method,
}

enum Method {
    Database {
        lookups: Lookups,
        ttl: Duration,
        cache: moka::sync::Cache<String, Cached>,
        /// Tokens found to have no session, by [`Authenticator::refusal_key`]; `None` when
        /// `AUTH_REFUSAL_TTL_MS` is 0.
        refused: Option<moka::sync::Cache<u64, ()>>,
        hasher: RandomState,
    },
    Jwt {
        key: DecodingKey,
        validation: Validation,
    },
}

/// The most sessions the cache holds; past it the least used go first.
pub const CACHE_CAPACITY: u64 = 100_000;

/// The most refused tokens remembered; past it the least used go first.
pub const REFUSAL_CAPACITY: u64 = 100_000;

/// A session found in the database, and when the cache must forget it.
#[derive(Clone)]
struct Cached {
    user: UserId,
    until: Instant,
}

/// Each entry lives until its own `until`: the cache TTL, or the session's expiry if sooner.
struct UntilExpiry;

impl moka::Expiry<String, Cached> for UntilExpiry {
    fn expire_after_create(&self, _: &String, value: &Cached, created_at: Instant) -> Option<Duration> {
        Some(value.until.saturating_duration_since(created_at))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    pub fn new(config: &Config, database: Option<Database>) -> anyhow::Result<Self> {
        let method = match (config.auth_mode, database) {
            (AuthMode::Database, Some(database)) => Method::Database {
                lookups: Lookups::start(database, &config.auth_session_query, config.auth_lookups_in_flight),
                ttl: Duration::from_millis(config.auth_cache_ttl_ms),
                cache: moka::sync::Cache::builder()
                    .max_capacity(CACHE_CAPACITY)
                    .expire_after(UntilExpiry)
                    .build(),
                refused: (config.auth_refusal_ttl_ms > 0).then(|| {
                    moka::sync::Cache::builder()
                        .max_capacity(REFUSAL_CAPACITY)
                        .time_to_live(config.auth_refusal_ttl())
                        .build()
                }),
                hasher: RandomState::new(),
            },
            (AuthMode::Database, None) => anyhow::bail!("database auth mode needs the database"),
            (AuthMode::Jwt, _) => {
                let secret = config.auth_jwt_secret.as_ref().map(|s| s.expose()).unwrap_or_default();
                Method::Jwt {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    validation: jwt_validation(&config.jwt_audiences()?),
                }
            }
        };
        Ok(Self { cookie_name: config.auth_cookie_name.clone(), method })
    }

    /// Finds the token in the handshake, in the contract's order.
    pub fn token<'a>(&self, headers: &'a HeaderMap, auth_token: Option<&'a str>) -> Option<&'a str> {
        let from_cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .map(|(_, value)| value.trim_matches('"'));
        let from_header = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim);
        [from_cookie, auth_token, from_header].into_iter().flatten().find(|t| !t.is_empty())
    }

    /// Forgets every cached session of `user` (`database` mode; a JWT has nothing cached), so
    /// their next handshake looks the session up again. Returns how many were forgotten. Walks
    /// the whole cache: fine for what an operator or a host application asks now and then.
    pub fn forget_user(&self, user: &UserId) -> usize {
        let Method::Database { cache, .. } = &self.method else { return 0 };
        let mut forgotten = 0;
        for (token, cached) in cache.iter() {
            if cached.user == *user {
                cache.invalidate(token.as_str());
                forgotten += 1;
            }
        }
        forgotten
    }

    pub async fn authenticate(&self, token: Option<&str>) -> Result<UserId, Refusal> {
        let token = token.ok_or(Refusal::NoToken)?;
        match &self.method {
            Method::Jwt { key, validation } => {
                let data = jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|e| Refusal::InvalidToken(e.to_string()))?;
                data.claims
                    .sub
                    .parse()
                    .map_err(|e: switchboard::contract::ids::InvalidId| Refusal::InvalidToken(e.0))
            }
            Method::Database { lookups, ttl, cache, refused, hasher } => {
                // `get` never returns an entry past its expiry.
                if let Some(found) = cache.get(token) {
                    return Ok(found.user);
                }
                let key = hasher.hash_one(token);
                if refused.as_ref().is_some_and(|refused| refused.contains_key(&key)) {
                    metrics::counter!("edge_session_refusals_remembered_total").increment(1);
                    return Err(Refusal::UnknownSession);
                }
                let found = lookups.find(token).await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
                let Some(Found { user_id, expires_at }) = found else {
                    if let Some(refused) = refused {
                        refused.insert(key, ());
                    }
                    return Err(Refusal::UnknownSession);
                };
                let user: UserId = user_id
                    .map_err(|e| Refusal::InvalidToken(format!("the session's user id: {e}")))?
                    .parse()
                    .map_err(|e| Refusal::InvalidToken(format!("the session's user id: {e}")))?;
                let until = Instant::now() + remaining(expires_at, *ttl);
                cache.insert(token.to_owned(), Cached { user: user.clone(), until });
                Ok(user)
            }
        }
    }
}

/// How a JWT is checked: HS256 only, `sub` and `exp` required, `exp` and `nbf` (when present)
/// with 5 s of leeway for clocks that drift apart. With `audiences`, `aud` is required and must
/// name one of them. Without, `aud` is not looked at: the library would otherwise refuse every
/// token that carries one, and issuers often add it whether or not we configured it.
fn jwt_validation(audiences: &[String]) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_nbf = true;
    if audiences.is_empty() {
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
    } else {
        // The library only checks an `aud` that is present; requiring it refuses tokens minted
        // for no audience in particular.
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.set_audience(audiences);
    }
    validation
}

/// How long a session found may be cached: `ttl`, or less when the query's second column
/// says the session expires sooner. A query that returns only the user id (an operator's own)
/// gets `ttl`.
fn remaining(expires_at: Option<DateTime<Utc>>, ttl: Duration) -> Duration {
    match expires_at {
        Some(at) => (at - Utc::now()).to_std().unwrap_or_default().min(ttl),
        None => ttl,
    }
}
