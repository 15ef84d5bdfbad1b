//! Configuration, exactly as in docs/reference.md, Configuration.
//!
//! Every binary reads the same [`Config`]: built-in defaults, then an optional TOML file
//! (`SWITCHBOARD_CONFIG`, else `switchboard.toml` when it exists), then environment variables,
//! which win. Keys in the TOML file are the variable names in lower case
//! (`rabbitmq_host = "..."`). Everything is parsed and checked before any other I/O than reading
//! the files settings name (the TOML file, `RABBITMQ_CA_FILE`), so a bad value stops the process
//! before a port is bound: [`Config::load`] returns a [`ConfigError`] whose `Display` is the one
//! line the binary prints before exiting with [`EXIT_CONFIG`].
//!
//! Secrets (passwords, the JWT secret, ingress keys, the database URL which may carry a
//! password) live in [`Secret`], whose `Debug` and `Display` never show the value.

use std::{collections::BTreeSet, fmt, net::IpAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize};

/// The exit code for a bad configuration (`EX_USAGE` in BSD's sysexits).
pub const EXIT_CONFIG: i32 = 64;

/// The shortest `AUTH_JWT_SECRET` accepted, in bytes. An HS256 key shorter than the hash's
/// output (RFC 7518 section 3.2) can be found by brute force from one captured token, and
/// with it anyone can sign in as anyone.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Every variable of docs/reference.md, Configuration plus our own operational ones. Also the list of keys
/// the environment provider looks at, so an unrelated variable such as `PATH` is never read.
/// (`SWITCHBOARD_CONFIG` and `RUST_LOG` are read too, outside this list.)
pub const KEYS: &[&str] = &[
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_USERNAME",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
    "RABBITMQ_TLS",
    "RABBITMQ_CA_FILE",
    "RABBITMQ_PREFETCH",
    "RABBITMQ_QUEUE_TYPE",
    "DATABASE_URL",
    "DATABASE_MIGRATE",
    "DATABASE_MAX_CONNECTIONS",
    "LISTEN_HOST",
    "WEBSOCKET_PORT",
    "METRICS_PORT",
    "AUTH_MODE",
    "AUTH_COOKIE_NAME",
    "AUTH_SESSION_QUERY",
    "AUTH_JWT_SECRET",
    "AUTH_JWT_AUDIENCE",
    "AUTH_CACHE_TTL_MS",
    "AUTH_REFUSAL_TTL_MS",
    "AUTH_LOOKUPS_IN_FLIGHT",
    "ALLOWED_ORIGINS",
    "RATE_LIMIT_PER_SEC",
    "RATE_LIMIT_BURST",
    "USER_RATE_LIMIT_PER_SEC",
    "USER_RATE_LIMIT_BURST",
    "HANDSHAKE_RATE_PER_SEC",
    "HANDSHAKE_BURST",
    "MAX_FRAME_BYTES",
    "ACK_TIMEOUT_MS",
    "CHAT_INFLIGHT_PER_SHARD",
    "CONNECT_TIMEOUT_MS",
    "MAX_SOCKETS_PER_USER",
    "SHUTDOWN_GRACE_MS",
    "INGRESS_API_KEYS",
    "PRESENCE_OFFLINE_GRACE_MS",
    "PRESENCE_REPORT_INTERVAL_MS",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// One setting as operators read about it: `docs/reference.md` (Configuration) is generated
/// from [`SETTINGS`], and a test checks it against [`KEYS`], [`Config::default`] and the
/// README's table. Data only: nothing here is read while parsing.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The environment variable (in lower case, the TOML key).
    pub key: &'static str,
    /// The default as Markdown: one value in backticks when it is [`Config::default`]'s own,
    /// otherwise words (computed, or unset).
    pub default: &'static str,
    /// Which processes read it.
    pub used_by: &'static str,
    /// What it does, as Markdown.
    pub meaning: &'static str,
}

const fn setting(
    key: &'static str,
    default: &'static str,
    used_by: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting { key, default, used_by, meaning }
}

/// Every key of [`KEYS`], in the same order, with its default and meaning.
pub const SETTINGS: &[Setting] = &[
    setting("RABBITMQ_HOST", "`127.0.0.1`", "all", "The RabbitMQ host."),
    setting(
        "RABBITMQ_PORT",
        "`5672`",
        "all",
        "The RabbitMQ AMQP port; with `RABBITMQ_TLS=true` the broker's TLS port, usually `5671` (not \
         changed for you).",
    ),
    setting("RABBITMQ_USERNAME", "`guest`", "all", "The RabbitMQ user."),
    setting("RABBITMQ_PASSWORD", "`guest`", "all", "The RabbitMQ password (a secret: never logged)."),
    setting("RABBITMQ_VHOST", "`/`", "all", "The RabbitMQ virtual host."),
    setting(
        "RABBITMQ_TLS",
        "`false`",
        "all",
        "`true`: AMQP over TLS (`amqps`) to `RABBITMQ_PORT`, the broker's certificate checked against \
         `RABBITMQ_CA_FILE` (or the public roots) and its name against `RABBITMQ_HOST`. A certificate \
         the process refuses is logged as one ERROR saying why, repeated at most every 30 s while it \
         keeps retrying.",
    ),
    setting(
        "RABBITMQ_CA_FILE",
        "none (the public roots bundled in the binary)",
        "all, with `RABBITMQ_TLS=true`",
        "A PEM file of the CA certificates that sign the broker's certificate; they are then the only \
         ones trusted for it. A file that cannot be read or holds no certificate stops the process at \
         start; it is read again at every new connection, so a CA replaced in place is used from the \
         next reconnection. Set without `RABBITMQ_TLS=true`, it stops the process too.",
    ),
    setting(
        "RABBITMQ_PREFETCH",
        "`64`",
        "all",
        "Unacknowledged deliveries one consumer may hold at once (AMQP `basic.qos`); at least 1.",
    ),
    setting(
        "RABBITMQ_QUEUE_TYPE",
        "`classic`",
        "all",
        "How durable queues are declared: `classic`, or `quorum` for a RabbitMQ cluster (replicated). \
         Every process of one installation must agree.",
    ),
    setting(
        "DATABASE_URL",
        "`postgres://switchboard:switchboard@127.0.0.1:5432/switchboard`",
        "workers; the edge in `database` auth mode",
        "A `postgres://` or `postgresql://` URL (a secret: it may carry a password). The default is for \
         development: the role and database `deploy/services.sh` creates; set your own everywhere else. \
         Credentials the database refuses are logged as one ERROR naming `DATABASE_URL` (never its \
         value), repeated at most every 30 s while the process keeps retrying.",
    ),
    setting(
        "DATABASE_MIGRATE",
        "`true`",
        "workers",
        "Apply the pending migrations of `migrations/` at start (safe when many copies start at once).",
    ),
    setting(
        "DATABASE_MAX_CONNECTIONS",
        "`10`",
        "workers; the edge in `database` auth mode",
        "Size of the connection pool; at least 1.",
    ),
    setting("LISTEN_HOST", "`0.0.0.0`", "all", "The address the HTTP listener binds to."),
    setting(
        "WEBSOCKET_PORT",
        "`3001`",
        "edge",
        "The edge's one port: Socket.IO, the ingress, health and metrics. `0` picks a free port and logs it.",
    ),
    setting(
        "METRICS_PORT",
        "`9101` / `9102` / `9103`",
        "messages / presence / notifier",
        "A worker's port for `/healthz`, `/readyz` and `/metrics`; unset is the binary's default.",
    ),
    setting("AUTH_MODE", "`database`", "edge", "How sessions are checked: `database` or `jwt`."),
    setting(
        "AUTH_COOKIE_NAME",
        "`session_token`",
        "edge",
        "The cookie the session token is read from first (then `auth.token`, then `Authorization: Bearer`).",
    ),
    setting(
        "AUTH_SESSION_QUERY",
        "`SELECT user_id, expires_at FROM sessions WHERE token = $1 AND expires_at > now()`",
        "edge, `database` mode",
        "Takes the token as `$1` and returns the user id; a second column, when present, is the \
         session's expiry, past which the edge's cache forgets it.",
    ),
    setting(
        "AUTH_JWT_SECRET",
        "none (required in `jwt` mode)",
        "edge, `jwt` mode",
        "HS256 key of at least 32 bytes (shorter stops the edge at start); claim `sub` = user id, \
         `exp` required, `nbf` checked when present (5 s leeway).",
    ),
    setting(
        "AUTH_JWT_AUDIENCE",
        "none (any `aud`, or none)",
        "edge, `jwt` mode",
        "Comma-separated audiences; when set, a token's `aud` must name one of them.",
    ),
    setting(
        "AUTH_CACHE_TTL_MS",
        "`30000`",
        "edge",
        "How long a successful session lookup is cached, at most (never past the session's expiry; \
         100,000 sessions at most).",
    ),
    setting(
        "AUTH_REFUSAL_TTL_MS",
        "`5000`",
        "edge, `database` mode",
        "How long a token the query found no session for is refused again without a query (100,000 \
         at most); a session created for that token meanwhile is refused until then. `0` turns it off.",
    ),
    setting(
        "AUTH_LOOKUPS_IN_FLIGHT",
        "`4`",
        "edge, `database` mode",
        "The most session queries at once; handshakes that arrive while all are running wait and are \
         looked up together, by one query.",
    ),
    setting(
        "ALLOWED_ORIGINS",
        "`*`",
        "edge",
        "Comma-separated origins; a handshake whose `Origin` is present and not listed gets 403, listed \
         ones get CORS headers with credentials. `*` lets any origin in without credentials (the \
         edge warns at start).",
    ),
    setting(
        "RATE_LIMIT_PER_SEC",
        "`20`",
        "edge",
        "Events per second per socket; past it an event is answered `rate_limited`.",
    ),
    setting("RATE_LIMIT_BURST", "`40`", "edge", "The burst of the per-socket budget."),
    setting(
        "USER_RATE_LIMIT_PER_SEC",
        "4 x `RATE_LIMIT_PER_SEC` (`80`)",
        "edge",
        "Events per second shared by all of one user's sockets on one edge, after the socket's own \
         limit; past it an event is answered `rate_limited` and has no effect. `0` turns it off.",
    ),
    setting(
        "USER_RATE_LIMIT_BURST",
        "4 x `RATE_LIMIT_BURST` (`160`)",
        "edge",
        "The burst of the per-user budget.",
    ),
    setting(
        "HANDSHAKE_RATE_PER_SEC",
        "`0`",
        "edge",
        "Engine.IO handshakes plus Socket.IO `CONNECT`s per second per client address (IPv6 by /64). \
         Past it a handshake gets HTTP 429 and a `CONNECT` gets `connect_error` `rate_limited`. Off by \
         default (`0`): many real clients share one address (a proxy or load balancer in front of the edge, \
         carrier-grade NAT), and a budget that refuses them is a surprise. Set it where clients reach \
         the edge directly (for example `20`, with a burst of `100`); behind a proxy, limit at the proxy.",
    ),
    setting("HANDSHAKE_BURST", "`100`", "edge", "The burst of the per-address budget, when it is on."),
    setting(
        "MAX_FRAME_BYTES",
        "`65536`",
        "edge",
        "The largest Engine.IO packet accepted; a larger one closes that connection only.",
    ),
    setting(
        "ACK_TIMEOUT_MS",
        "`5000`",
        "edge",
        "The longest wait for a worker before answering `timeout` (HTTP 504 on the ingress).",
    ),
    setting(
        "CHAT_INFLIGHT_PER_SHARD",
        "`64`",
        "edge",
        "Chat commands (`message:send`, `message:read`) waiting for an answer per shard (16 shards); \
         past it a command is answered `unavailable` at once and has no effect.",
    ),
    setting(
        "CONNECT_TIMEOUT_MS",
        "`10000`",
        "edge",
        "How long a new connection may take to send its Socket.IO `CONNECT` (with its credentials) \
         before it is closed.",
    ),
    setting(
        "MAX_SOCKETS_PER_USER",
        "`32`",
        "edge",
        "The most sockets one user may have on one edge; past it a connection gets `connect_error` \
         `too_many_connections`.",
    ),
    setting(
        "SHUTDOWN_GRACE_MS",
        "`10000`",
        "all",
        "The whole stop after SIGTERM fits in this time: in-flight work is finished or handed back, \
         then the process exits 0.",
    ),
    setting(
        "INGRESS_API_KEYS",
        "none (ingress disabled)",
        "edge",
        "Comma-separated bearer keys for `/api/v1/*` (secrets).",
    ),
    setting(
        "PRESENCE_OFFLINE_GRACE_MS",
        "`2000`",
        "presence",
        "A user whose last socket closed is announced offline only if no socket opens within this time.",
    ),
    setting(
        "PRESENCE_REPORT_INTERVAL_MS",
        "`5000`",
        "edge and presence",
        "How often each edge reports its users to presence; an edge silent for three intervals is \
         taken for dead. Edges and presence workers must agree.",
    ),
    setting(
        "LOG_FORMAT",
        "`pretty` on a terminal, else `json`",
        "all",
        "`pretty` or `json`; the level comes from `RUST_LOG`.",
    ),
    setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "none (no traces)",
        "all",
        "An OpenTelemetry collector's OTLP/HTTP base URL (`http://collector:4318`): spans are sent \
         to its `/v1/traces`, one trace per chat message across every process (docs/reference.md, \
         Traces). Unset, nothing is recorded. The SDK's own variables apply too \
         (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`).",
    ),
];

/// Which process is loading the configuration: decides the default `METRICS_PORT` and which
/// settings are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edge,
    Messages,
    Presence,
    Notifier,
    /// A host application's backend using this crate to publish (docs/reference.md, Ingress).
    Backend,
}

impl Role {
    /// The binary's name, as in docs/reference.md, Processes.
    pub fn binary(self) -> &'static str {
        match self {
            Role::Edge => "switchboard-edge",
            Role::Messages => "switchboard-messages",
            Role::Presence => "switchboard-presence",
            Role::Notifier => "switchboard-notifier",
            Role::Backend => "switchboard-backend",
        }
    }

    fn default_metrics_port(self) -> u16 {
        match self {
            Role::Edge => 3001,
            Role::Messages => 9101,
            Role::Presence => 9102,
            Role::Notifier => 9103,
            Role::Backend => 0,
        }
    }
}

/// The whole configuration. Field names are the variables of docs/reference.md, Configuration in lower case.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(deserialize_with = "text")]
    pub rabbitmq_host: String,
    pub rabbitmq_port: u16,
    #[serde(deserialize_with = "text")]
    pub rabbitmq_username: String,
    pub rabbitmq_password: Secret,
    #[serde(deserialize_with = "text")]
    pub rabbitmq_vhost: String,
    /// AMQP over TLS (`amqps`): the broker's certificate is checked before anything, the
    /// password included, is sent ([`crate::tls`]).
    pub rabbitmq_tls: bool,
    /// The CAs trusted for the broker's certificate, instead of the public roots; read at load
    /// (a bad file is a configuration error) and again per connection ([`crate::tls`]).
    #[serde(deserialize_with = "optional_path")]
    pub rabbitmq_ca_file: Option<PathBuf>,
    /// Unacknowledged deliveries a consumer may hold at once (AMQP `basic.qos`).
    pub rabbitmq_prefetch: u16,
    /// How durable queues are declared: `classic`, or `quorum` for a RabbitMQ cluster
    /// (replicated). Every process of one installation must agree.
    pub rabbitmq_queue_type: QueueType,

    pub database_url: Secret,
    /// Apply pending migrations at start (docs/reference.md, Operations and metrics).
    pub database_migrate: bool,
    pub database_max_connections: u32,

    /// Address the HTTP listener binds to; `WEBSOCKET_PORT` or `METRICS_PORT` gives the port.
    pub listen_host: IpAddr,
    /// The edge's port: Socket.IO, ingress, health and metrics. `0` picks a free port, which
    /// the edge logs (tests use this).
    pub websocket_port: u16,
    /// A worker's health and metrics port; unset means the role's default (9101..9103).
    pub metrics_port: Option<u16>,

    pub auth_mode: AuthMode,
    #[serde(deserialize_with = "text")]
    pub auth_cookie_name: String,
    #[serde(deserialize_with = "text")]
    pub auth_session_query: String,
    pub auth_jwt_secret: Option<Secret>,
    /// Comma-separated audiences a token's `aud` must name one of; unset accepts any `aud`
    /// (or none). Read through [`Config::jwt_audiences`].
    #[serde(deserialize_with = "optional_text")]
    pub auth_jwt_audience: Option<String>,
    /// How long a successful session lookup is cached by the edge.
    pub auth_cache_ttl_ms: u64,
    /// How long the edge remembers a token it found no session for (unknown or expired), so
    /// that trying it again costs no query; `0` remembers none. A session created for that
    /// token within this time is refused until it passes.
    pub auth_refusal_ttl_ms: u64,
    /// The most session queries one edge runs at once. Handshakes that arrive while all are
    /// running wait, and are looked up together by the next query.
    pub auth_lookups_in_flight: u32,
    /// Comma-separated origins, or `*`.
    #[serde(deserialize_with = "text")]
    pub allowed_origins: String,

    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Events per second shared by all of one user's sockets on one edge; unset is four
    /// sockets' worth (4 x `RATE_LIMIT_PER_SEC`), `0` turns the per-user budget off. Read
    /// through [`Config::user_rate_limit`].
    pub user_rate_limit_per_sec: Option<u32>,
    /// The burst of that budget; unset is 4 x `RATE_LIMIT_BURST`.
    pub user_rate_limit_burst: Option<u32>,
    /// Engine.IO handshakes plus Socket.IO CONNECTs per second from one client address (an
    /// IPv6 address counts by its /64); past it a handshake gets HTTP 429 and a CONNECT
    /// `connect_error` `rate_limited`. `0` turns the limit off (behind a proxy every client
    /// has the proxy's address: see the README).
    pub handshake_rate_per_sec: u32,
    /// The burst of that budget.
    pub handshake_burst: u32,
    pub max_frame_bytes: u64,
    pub ack_timeout_ms: u64,
    /// Admission control: the chat commands (`message:send`, `message:read`) one edge keeps
    /// waiting for their answer per shard. Past it a command is answered `unavailable` at
    /// once instead of queueing behind work that would expire.
    pub chat_inflight_per_shard: u32,
    /// How long a new connection may take to send its Socket.IO CONNECT (which carries its
    /// credentials) before the edge closes it: a handshake that never authenticates holds
    /// memory for this long at most.
    pub connect_timeout_ms: u64,
    /// The most sockets one user may have on one edge; past it a connection is refused with
    /// `too_many_connections`.
    pub max_sockets_per_user: u32,
    pub shutdown_grace_ms: u64,
    /// Comma-separated bearer keys for `/api/v1/*`; unset disables the ingress.
    pub ingress_api_keys: Option<Secret>,
    pub presence_offline_grace_ms: u64,
    /// How often each edge reports its users to presence; an edge silent for three intervals
    /// is taken for dead. Edges and presence workers must agree.
    pub presence_report_interval_ms: u64,
    pub log_format: Option<LogFormat>,
    /// Where spans are exported (OTLP over HTTP); unset, none are recorded.
    pub otel_exporter_otlp_endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rabbitmq_host: "127.0.0.1".into(),
            rabbitmq_port: 5672,
            rabbitmq_username: "guest".into(),
            rabbitmq_password: Secret::new("guest"),
            rabbitmq_vhost: "/".into(),
            rabbitmq_tls: false,
            rabbitmq_ca_file: None,
            rabbitmq_prefetch: 64,
            rabbitmq_queue_type: QueueType::Classic,
            // The role and database `deploy/services.sh` creates: a binary started by hand on a
            // development machine finds them. Production sets its own.
            database_url: Secret::new("postgres://switchboard:switchboard@127.0.0.1:5432/switchboard"),
            database_migrate: true,
            database_max_connections: 10,
            listen_host: IpAddr::from([0, 0, 0, 0]),
            websocket_port: 3001,
            metrics_port: None,
            auth_mode: AuthMode::Database,
            auth_cookie_name: "session_token".into(),
            auth_session_query:
                "SELECT user_id, expires_at FROM sessions WHERE token = $1 AND expires_at > now()".into(),
            auth_jwt_secret: None,
            auth_jwt_audience: None,
            auth_cache_ttl_ms: 30_000,
            auth_refusal_ttl_ms: 5_000,
            auth_lookups_in_flight: 4,
            allowed_origins: "*".into(),
            rate_limit_per_sec: 20,
            rate_limit_burst: 40,
            user_rate_limit_per_sec: None,
            user_rate_limit_burst: None,
            handshake_rate_per_sec: 0,
            handshake_burst: 100,
            max_frame_bytes: 65_536,
            ack_timeout_ms: 5_000,
            chat_inflight_per_shard: 64,
            connect_timeout_ms: 10_000,
            max_sockets_per_user: 32,
            shutdown_grace_ms: 10_000,
            ingress_api_keys: None,
            presence_offline_grace_ms: 2_000,
            presence_report_interval_ms: 5_000,
            log_format: None,
            otel_exporter_otlp_endpoint: None,
        }
    }
}

/// The type of the durable queues (`RABBITMQ_QUEUE_TYPE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Database,
    Jwt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The one line a binary prints for a bad configuration, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &str, reason: impl Into<String>) -> Self {
        Self { variable: variable.into(), reason: reason.into() }
    }
}

/// Which origins may open a socket (docs/reference.md, Configuration, `ALLOWED_ORIGINS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    List(BTreeSet<String>),
}

impl AllowedOrigins {
    /// Whether a handshake carrying this `Origin` header may proceed. Clients that send no
    /// Origin (servers, mobile apps) are not subject to the check.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) | (AllowedOrigins::Any, _) => true,
            (AllowedOrigins::List(list), Some(origin)) => list.contains(origin.trim_end_matches('/')),
        }
    }
}

impl Config {
    /// Loads defaults, the TOML file and the environment, then checks everything `role` needs.
    pub fn load(role: Role) -> Result<Self, ConfigError> {
        let file = std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from);
        Self::from_figment(role, Self::figment(file))
    }

    fn figment(file: Option<PathBuf>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            // A file named explicitly must exist: a typo in the path is a configuration error.
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("switchboard.toml")),
        }
        figment.merge(Env::raw().only(KEYS))
    }

    fn from_figment(role: Role, figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(describe)?;
        config.validate(role)?;
        Ok(config)
    }

    fn validate(&self, role: Role) -> Result<(), ConfigError> {
        if self.rabbitmq_host.trim().is_empty() {
            return Err(ConfigError::new("RABBITMQ_HOST", "must not be empty"));
        }
        if let Some(path) = &self.rabbitmq_ca_file {
            if !self.rabbitmq_tls {
                // Most likely TLS was meant and is not on: say so rather than send the password
                // in the clear.
                return Err(ConfigError::new("RABBITMQ_CA_FILE", "is set but RABBITMQ_TLS is not true"));
            }
            crate::tls::read_ca_file(path).map_err(|reason| ConfigError::new("RABBITMQ_CA_FILE", reason))?;
        }
        if self.rabbitmq_prefetch == 0 {
            return Err(ConfigError::new("RABBITMQ_PREFETCH", "must be at least 1"));
        }
        if let Some(endpoint) = self.otlp_endpoint()
            && !endpoint.starts_with("http://")
        {
            // The exporter speaks plain HTTP: a collector beside the process (a sidecar or the
            // node's agent) takes the spans on over TLS when they must leave the machine.
            return Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "must be an http:// URL (OTLP over HTTP, e.g. http://collector:4318)",
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::new("DATABASE_MAX_CONNECTIONS", "must be at least 1"));
        }
        if !self.database_url.expose().starts_with("postgres://")
            && !self.database_url.expose().starts_with("postgresql://")
        {
            return Err(ConfigError::new("DATABASE_URL", "must be a postgres:// or postgresql:// URL"));
        }
        for (name, value) in [
            ("RATE_LIMIT_PER_SEC", u64::from(self.rate_limit_per_sec)),
            ("RATE_LIMIT_BURST", u64::from(self.rate_limit_burst)),
            ("MAX_FRAME_BYTES", self.max_frame_bytes),
            ("ACK_TIMEOUT_MS", self.ack_timeout_ms),
            ("CHAT_INFLIGHT_PER_SHARD", u64::from(self.chat_inflight_per_shard)),
            ("CONNECT_TIMEOUT_MS", self.connect_timeout_ms),
            ("MAX_SOCKETS_PER_USER", u64::from(self.max_sockets_per_user)),
            ("AUTH_LOOKUPS_IN_FLIGHT", u64::from(self.auth_lookups_in_flight)),
            ("SHUTDOWN_GRACE_MS", self.shutdown_grace_ms),
            ("PRESENCE_REPORT_INTERVAL_MS", self.presence_report_interval_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(name, "must be greater than 0"));
            }
        }
        if role == Role::Edge {
            if self.auth_mode == AuthMode::Jwt {
                let secret = self.auth_jwt_secret.as_ref().map_or("", Secret::expose);
                if secret.is_empty() {
                    return Err(ConfigError::new("AUTH_JWT_SECRET", "required when AUTH_MODE=jwt"));
                }
                if secret.len() < MIN_JWT_SECRET_BYTES {
                    return Err(ConfigError::new(
                        "AUTH_JWT_SECRET",
                        format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                    ));
                }
                self.jwt_audiences()?;
            }
            if self.auth_cookie_name.trim().is_empty() {
                return Err(ConfigError::new("AUTH_COOKIE_NAME", "must not be empty"));
            }
            if self.auth_mode == AuthMode::Database && !self.auth_session_query.contains("$1") {
                return Err(ConfigError::new("AUTH_SESSION_QUERY", "must take the token as $1"));
            }
            self.origins()?;
        }
        Ok(())
    }

    /// The health and metrics port of this process.
    pub fn http_port(&self, role: Role) -> u16 {
        match role {
            Role::Edge => self.websocket_port,
            _ => self.metrics_port.unwrap_or(role.default_metrics_port()),
        }
    }

    pub fn origins(&self) -> Result<AllowedOrigins, ConfigError> {
        let raw = self.allowed_origins.trim();
        if raw == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let list: BTreeSet<String> = raw
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() {
            return Err(ConfigError::new("ALLOWED_ORIGINS", "lists no origin (use * for any)"));
        }
        if let Some(bad) = list.iter().find(|o| !(o.starts_with("http://") || o.starts_with("https://"))) {
            return Err(ConfigError::new(
                "ALLOWED_ORIGINS",
                format!("{bad:?} is not an origin such as https://app.example.com"),
            ));
        }
        Ok(AllowedOrigins::List(list))
    }

    /// The collector spans go to, when one is set (an empty value is none).
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otel_exporter_otlp_endpoint.as_deref().map(str::trim).filter(|endpoint| !endpoint.is_empty())
    }

    /// The audiences a JWT's `aud` must name one of; empty when `AUTH_JWT_AUDIENCE` is unset,
    /// which accepts any `aud`.
    pub fn jwt_audiences(&self) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = &self.auth_jwt_audience else { return Ok(Vec::new()) };
        let audiences: Vec<String> =
            raw.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        if audiences.is_empty() {
            return Err(ConfigError::new("AUTH_JWT_AUDIENCE", "lists no audience (leave it unset for any)"));
        }
        Ok(audiences)
    }

    /// The ingress keys; empty when the ingress is disabled.
    pub fn ingress_keys(&self) -> Vec<Secret> {
        self.ingress_api_keys
            .as_ref()
            .map(|keys| {
                keys.expose().split(',').map(str::trim).filter(|k| !k.is_empty()).map(Secret::new).collect()
            })
            .unwrap_or_default()
    }

    /// The per-user event budget as (per second, burst); `None` when it is off.
    pub fn user_rate_limit(&self) -> Option<(u32, u32)> {
        let per_second = self.user_rate_limit_per_sec.unwrap_or(self.rate_limit_per_sec.saturating_mul(4));
        let burst = self.user_rate_limit_burst.unwrap_or(self.rate_limit_burst.saturating_mul(4));
        (per_second > 0).then_some((per_second, burst.max(1)))
    }

    /// The per-address handshake budget as (per second, burst); `None` when it is off.
    pub fn handshake_limit(&self) -> Option<(u32, u32)> {
        (self.handshake_rate_per_sec > 0)
            .then_some((self.handshake_rate_per_sec, self.handshake_burst.max(1)))
    }

    pub fn auth_refusal_ttl(&self) -> Duration {
        Duration::from_millis(self.auth_refusal_ttl_ms)
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The AMQP URI, with the vhost percent-encoded (`/` is `%2f`): `amqps://` with
    /// `RABBITMQ_TLS`.
    pub fn amqp_uri(&self) -> Secret {
        Secret::new(format!(
            "{}://{}:{}@{}:{}/{}",
            if self.rabbitmq_tls { "amqps" } else { "amqp" },
            encode(&self.rabbitmq_username),
            encode(self.rabbitmq_password.expose()),
            self.rabbitmq_host,
            self.rabbitmq_port,
            encode(&self.rabbitmq_vhost),
        ))
    }
}

/// Percent-encodes everything outside RFC 3986's unreserved set, for URI user info and path.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Turns figment's error into one line naming the variable. The value is named only by its
/// kind, never shown, because it may be a secret.
fn describe(error: figment::Error) -> ConfigError {
    let variable = error
        .path
        .first()
        .map(|key| key.to_ascii_uppercase())
        .unwrap_or_else(|| "SWITCHBOARD_CONFIG".to_owned());
    let reason = match &error.kind {
        figment::error::Kind::InvalidType(actual, expected)
        | figment::error::Kind::InvalidValue(actual, expected) => must_be(&variable, expected)
            .unwrap_or_else(|| format!("expected {expected}, found {}", kind_of(actual))),
        figment::error::Kind::UnknownVariant(_, expected) => {
            format!("expected one of {}", expected.join(", "))
        }
        // `IpAddr`'s parser says "invalid IP address syntax" and nothing more.
        figment::error::Kind::Message(message) if message.contains("IP address") => {
            "must be an IP address such as 0.0.0.0 or ::".to_owned()
        }
        figment::error::Kind::UnknownField(field, _) => {
            return ConfigError::new(&field.to_ascii_uppercase(), "is not a known setting");
        }
        other => other.to_string(),
    };
    ConfigError::new(&variable, reason)
}

/// What a setting must be, in words, from the Rust type serde expected: "u16" means nothing
/// to an operator who wrote `WEBSOCKET_PORT=70000`. `None` for a type not named here.
fn must_be(variable: &str, expected: &str) -> Option<String> {
    let max = match expected {
        "u8" => u64::from(u8::MAX),
        "u16" if variable.ends_with("_PORT") => {
            return Some("must be a port number from 0 to 65535".to_owned());
        }
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" | "usize" => u64::MAX,
        "a boolean" => return Some("must be true or false".to_owned()),
        "IP address" => return Some("must be an IP address such as 0.0.0.0 or ::".to_owned()),
        _ => return None,
    };
    Some(format!("must be a whole number from 0 to {max}"))
}

fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Str(_) | Actual::Char(_) => "text",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

/// A string that never prints. Use [`Secret::expose`] where the value is really needed.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        text(deserializer).map(Secret)
    }
}

/// [`text`] for a setting that may be unset.
fn optional_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Text(#[serde(deserialize_with = "text")] String);
    Ok(Option::<Text>::deserialize(deserializer)?.map(|Text(value)| value))
}

/// A path setting that may be unset; empty text is unset too, as an empty variable in a
/// manifest usually means.
fn optional_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional_text(deserializer)?.filter(|path| !path.trim().is_empty()).map(PathBuf::from))
}

/// Reads a string setting whatever the environment parser made of it: figment parses
/// `RABBITMQ_PASSWORD=12345` as a number and `true` as a boolean, and both are valid text.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("text")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_char<E: serde::de::Error>(self, v: char) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Text)
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load(role: Role) -> Result<Config, ConfigError> {
        Config::from_figment(role, Config::figment(None))
    }

    #[test]
    fn defaults_match_the_contract() {
        Jail::expect_with(|_| {
            let c = load(Role::Messages).expect("defaults are valid");
            assert_eq!(c.rabbitmq_host, "127.0.0.1");
            assert_eq!(c.rabbitmq_port, 5672);
            assert_eq!(c.rabbitmq_vhost, "/");
            assert_eq!(
                c.database_url.expose(),
                "postgres://switchboard:switchboard@127.0.0.1:5432/switchboard"
            );
            assert_eq!(c.websocket_port, 3001);
            assert_eq!(c.http_port(Role::Messages), 9101);
            assert_eq!(c.http_port(Role::Presence), 9102);
            assert_eq!(c.http_port(Role::Notifier), 9103);
            assert_eq!(c.http_port(Role::Edge), 3001);
            assert_eq!(c.auth_mode, AuthMode::Database);
            assert_eq!(c.auth_cookie_name, "session_token");
            assert_eq!((c.rate_limit_per_sec, c.rate_limit_burst), (20, 40));
            assert_eq!(c.max_frame_bytes, 65_536);
            assert_eq!(c.ack_timeout_ms, 5_000);
            assert_eq!(c.shutdown_grace_ms, 10_000);
            assert_eq!(c.presence_offline_grace_ms, 2_000);
            assert!(c.ingress_keys().is_empty());
            assert_eq!(c.origins().expect("valid"), AllowedOrigins::Any);
            assert_eq!(c.amqp_uri().expose(), "amqp://guest:guest@127.0.0.1:5672/%2F");
            Ok(())
        });
    }

    /// The documented settings (docs/reference.md) are exactly the keys read, in their order,
    /// and a default shown as one value is the one the code uses; any other default (computed,
    /// or unset) is unset in [`Config::default`].
    #[test]
    fn settings_document_every_key_and_its_default() {
        let documented: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(documented, KEYS, "SETTINGS must list every key of KEYS, in the same order");
        let defaults = serde_json::to_value(Config::default()).expect("serializes");
        for setting in SETTINGS {
            let actual = &defaults[setting.key.to_ascii_lowercase()];
            let single = setting.default.len() > 2
                && setting.default.starts_with('`')
                && setting.default.ends_with('`')
                && setting.default.matches('`').count() == 2;
            if single {
                let shown = setting.default.trim_matches('`');
                let actual = match actual {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                assert_eq!(
                    shown, actual,
                    "{}: the documented default differs from Config::default()",
                    setting.key
                );
            } else {
                assert!(
                    actual.is_null(),
                    "{}: documented as {:?} but Config::default() sets {actual}",
                    setting.key,
                    setting.default
                );
            }
        }
    }

    #[test]
    fn environment_wins_over_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("switchboard.toml", "rabbitmq_host = \"file-host\"\nrabbitmq_port = 1\n")?;
            jail.set_env("RABBITMQ_PORT", "5673");
            jail.set_env("RABBITMQ_PASSWORD", "12345");
            jail.set_env("INGRESS_API_KEYS", "k1, k2,");
            let c = load(Role::Edge).expect("valid");
            assert_eq!(c.rabbitmq_host, "file-host");
            assert_eq!(c.rabbitmq_port, 5673);
            assert_eq!(c.rabbitmq_password.expose(), "12345");
            let keys: Vec<_> = c.ingress_keys().iter().map(|k| k.expose().to_owned()).collect();
            assert_eq!(keys, ["k1", "k2"]);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_the_variable_and_not_the_value() {
        Jail::expect_with(|jail| {
            jail.set_env("RABBITMQ_PORT", "not-a-port");
            let err = load(Role::Messages).expect_err("must fail");
            assert_eq!(err.variable, "RABBITMQ_PORT");
            assert_eq!(
                err.to_string(),
                "invalid configuration: RABBITMQ_PORT: must be a port number from 0 to 65535"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_numbers_are_explained_in_words_for_every_numeric_setting() {
        Jail::expect_with(|jail| {
            let cases = [
                ("WEBSOCKET_PORT", "70000", "must be a port number from 0 to 65535"),
                ("METRICS_PORT", "-1", "must be a port number from 0 to 65535"),
                ("RABBITMQ_PORT", "5672.5", "must be a port number from 0 to 65535"),
                ("RABBITMQ_PREFETCH", "70000", "must be a whole number from 0 to 65535"),
                ("DATABASE_MAX_CONNECTIONS", "many", "must be a whole number from 0 to 4294967295"),
                ("USER_RATE_LIMIT_PER_SEC", "-5", "must be a whole number from 0 to 4294967295"),
                ("ACK_TIMEOUT_MS", "soon", "must be a whole number from 0 to 18446744073709551615"),
                ("DATABASE_MIGRATE", "perhaps", "must be true or false"),
                ("LISTEN_HOST", "localhost", "must be an IP address such as 0.0.0.0 or ::"),
            ];
            for (variable, value, reason) in cases {
                jail.clear_env();
                jail.set_env(variable, value);
                let err = load(Role::Edge).expect_err("must fail");
                assert_eq!(
                    err.to_string(),
                    format!("invalid configuration: {variable}: {reason}"),
                    "{value}"
                );
            }
            Ok(())
        });
    }

    #[test]
    fn jwt_mode_requires_a_secret_on_the_edge_only() {
        Jail::expect_with(|jail| {
            jail.set_env("AUTH_MODE", "jwt");
            assert_eq!(load(Role::Edge).expect_err("must fail").variable, "AUTH_JWT_SECRET");
            load(Role::Notifier).expect("workers do not authenticate clients");
            jail.set_env("AUTH_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret");
            let c = load(Role::Edge).expect("valid");
            assert_eq!(format!("{:?}", c.auth_jwt_secret), "Some(Secret(***))");
            assert!(!format!("{c:?}").contains("s3cret"));
            Ok(())
        });
    }

    #[test]
    fn a_jwt_secret_shorter_than_32_bytes_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("AUTH_MODE", "jwt");
            jail.set_env("AUTH_JWT_SECRET", "x".repeat(31));
            let err = load(Role::Edge).expect_err("must fail");
            assert_eq!(err.to_string(), "invalid configuration: AUTH_JWT_SECRET: must be at least 32 bytes");
            jail.set_env("AUTH_JWT_SECRET", "x".repeat(32));
            load(Role::Edge).expect("32 bytes are enough");
            // The secret is only read in jwt mode.
            jail.set_env("AUTH_MODE", "database");
            jail.set_env("AUTH_JWT_SECRET", "short");
            load(Role::Edge).expect("valid");
            Ok(())
        });
    }

    #[test]
    fn jwt_audiences_are_a_list_or_unset() {
        Jail::expect_with(|jail| {
            jail.set_env("AUTH_MODE", "jwt");
            jail.set_env("AUTH_JWT_SECRET", "x".repeat(32));
            assert!(load(Role::Edge).expect("valid").jwt_audiences().expect("valid").is_empty());
            jail.set_env("AUTH_JWT_AUDIENCE", "app, admin,");
            assert_eq!(load(Role::Edge).expect("valid").jwt_audiences().expect("valid"), ["app", "admin"]);
            // A number is an audience like any other text.
            jail.set_env("AUTH_JWT_AUDIENCE", "42");
            assert_eq!(load(Role::Edge).expect("valid").jwt_audiences().expect("valid"), ["42"]);
            jail.set_env("AUTH_JWT_AUDIENCE", " , ");
            assert_eq!(load(Role::Edge).expect_err("must fail").variable, "AUTH_JWT_AUDIENCE");
            Ok(())
        });
    }

    #[test]
    fn unknown_auth_mode_and_unknown_file_keys_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("AUTH_MODE", "ldap");
            let err = load(Role::Edge).expect_err("must fail");
            assert_eq!(err.variable, "AUTH_MODE");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("switchboard.toml", "rabitmq_host = \"typo\"\n")?;
            let err = load(Role::Edge).expect_err("must fail");
            assert_eq!(err.variable, "RABITMQ_HOST");
            assert_eq!(err.reason, "is not a known setting");
            Ok(())
        });
    }

    #[test]
    fn queue_type_is_classic_or_quorum() {
        Jail::expect_with(|jail| {
            assert_eq!(load(Role::Messages).expect("valid").rabbitmq_queue_type, QueueType::Classic);
            jail.set_env("RABBITMQ_QUEUE_TYPE", "quorum");
            assert_eq!(load(Role::Messages).expect("valid").rabbitmq_queue_type, QueueType::Quorum);
            jail.set_env("RABBITMQ_QUEUE_TYPE", "stream");
            assert_eq!(load(Role::Messages).expect_err("must fail").variable, "RABBITMQ_QUEUE_TYPE");
            Ok(())
        });
    }

    #[test]
    fn origins_are_a_list_and_absent_origin_is_allowed() {
        Jail::expect_with(|jail| {
            jail.set_env("ALLOWED_ORIGINS", "https://app.example.com, http://localhost:5173/");
            let origins = load(Role::Edge).expect("valid").origins().expect("valid");
            assert!(origins.allows(Some("https://app.example.com")));
            assert!(origins.allows(Some("http://localhost:5173")));
            assert!(!origins.allows(Some("https://evil.example.com")));
            assert!(origins.allows(None));
            jail.set_env("ALLOWED_ORIGINS", "app.example.com");
            assert_eq!(load(Role::Edge).expect_err("must fail").variable, "ALLOWED_ORIGINS");
            Ok(())
        });
    }

    #[test]
    fn session_lookups_are_bounded_and_refusals_remembered_by_default() {
        Jail::expect_with(|jail| {
            let c = load(Role::Edge).expect("valid");
            assert_eq!((c.auth_refusal_ttl_ms, c.auth_lookups_in_flight), (5_000, 4));
            jail.set_env("AUTH_REFUSAL_TTL_MS", "0");
            assert_eq!(load(Role::Edge).expect("0 remembers no refusal").auth_refusal_ttl_ms, 0);
            jail.set_env("AUTH_LOOKUPS_IN_FLIGHT", "0");
            assert_eq!(load(Role::Edge).expect_err("must fail").variable, "AUTH_LOOKUPS_IN_FLIGHT");
            Ok(())
        });
    }

    #[test]
    fn connection_budgets_have_defaults_and_zero_turns_them_off() {
        Jail::expect_with(|jail| {
            let c = load(Role::Edge).expect("valid");
            assert_eq!(c.handshake_limit(), None, "off unless set");
            // Unset, the per-user budget is four sockets' worth, and follows the per-socket one.
            assert_eq!(c.user_rate_limit(), Some((80, 160)));
            jail.set_env("RATE_LIMIT_PER_SEC", "1000");
            jail.set_env("RATE_LIMIT_BURST", "2000");
            assert_eq!(load(Role::Edge).expect("valid").user_rate_limit(), Some((4000, 8000)));
            jail.set_env("USER_RATE_LIMIT_PER_SEC", "30");
            jail.set_env("USER_RATE_LIMIT_BURST", "60");
            assert_eq!(load(Role::Edge).expect("valid").user_rate_limit(), Some((30, 60)));
            jail.set_env("USER_RATE_LIMIT_PER_SEC", "0");
            jail.set_env("HANDSHAKE_RATE_PER_SEC", "0");
            let c = load(Role::Edge).expect("valid");
            assert_eq!((c.user_rate_limit(), c.handshake_limit()), (None, None));
            Ok(())
        });
    }

    #[test]
    fn tls_makes_the_uri_amqps_and_leaves_the_port_alone() {
        Jail::expect_with(|jail| {
            let c = load(Role::Messages).expect("valid");
            assert!(!c.rabbitmq_tls && c.rabbitmq_ca_file.is_none(), "off by default");
            jail.set_env("RABBITMQ_TLS", "true");
            let c = load(Role::Messages).expect("valid");
            assert_eq!(c.amqp_uri().expose(), "amqps://guest:guest@127.0.0.1:5672/%2F");
            jail.set_env("RABBITMQ_TLS", "yes");
            let err = load(Role::Messages).expect_err("must fail");
            assert_eq!(err.to_string(), "invalid configuration: RABBITMQ_TLS: must be true or false");
            Ok(())
        });
    }

    #[test]
    fn a_ca_file_must_be_readable_hold_a_certificate_and_come_with_tls() {
        Jail::expect_with(|jail| {
            jail.set_env("RABBITMQ_TLS", "true");
            // Empty is unset, as an empty variable in a manifest usually means.
            jail.set_env("RABBITMQ_CA_FILE", "");
            assert_eq!(load(Role::Edge).expect("valid").rabbitmq_ca_file, None);
            let cases = [
                ("missing.pem", None, "cannot read missing.pem: "),
                ("empty.pem", Some(""), "empty.pem holds no PEM certificate"),
                (
                    "key.pem",
                    Some("-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n-----END PRIVATE KEY-----\n"),
                    "key.pem holds no PEM certificate",
                ),
                // The prod overlay's placeholder, left as it is.
                (
                    "placeholder.pem",
                    Some("-----BEGIN CERTIFICATE-----\nREPLACE_ME\n-----END CERTIFICATE-----\n"),
                    "placeholder.pem is not valid PEM: ",
                ),
                (
                    "junk.pem",
                    Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                    "junk.pem holds a certificate that cannot be a CA: ",
                ),
            ];
            for (file, contents, reason) in cases {
                if let Some(contents) = contents {
                    jail.create_file(file, contents)?;
                }
                jail.set_env("RABBITMQ_CA_FILE", file);
                let err = load(Role::Notifier).expect_err("must fail");
                assert!(
                    err.to_string()
                        .starts_with(&format!("invalid configuration: RABBITMQ_CA_FILE: {reason}")),
                    "{file}: {err}"
                );
            }
            jail.set_env("RABBITMQ_TLS", "false");
            let err = load(Role::Notifier).expect_err("must fail");
            assert_eq!(
                err.to_string(),
                "invalid configuration: RABBITMQ_CA_FILE: is set but RABBITMQ_TLS is not true"
            );
            Ok(())
        });
    }

    #[test]
    fn vhost_and_password_are_encoded_in_the_uri() {
        Jail::expect_with(|jail| {
            jail.set_env("RABBITMQ_VHOST", "test/1");
            jail.set_env("RABBITMQ_PASSWORD", "p@ss:word");
            let c = load(Role::Messages).expect("valid");
            assert_eq!(c.amqp_uri().expose(), "amqp://guest:p%40ss%3Aword@127.0.0.1:5672/test%2F1");
            Ok(())
        });
    }
}
