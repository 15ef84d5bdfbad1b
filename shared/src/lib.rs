//! Switchboard's shared library: everything two binaries would otherwise write twice.
//!
//! - [`contract`]: the event payloads and bus message bodies of `CONTRACT.md`, defined once;
//! - [`config`]: configuration (docs/reference.md, Configuration);
//! - [`bus`]: RabbitMQ: topology, publishing with confirms, consuming, request/reply;
//! - [`db`]: the PostgreSQL pool and migrations;
//! - [`tls`]: which CAs the bus trusts over TLS, and a refused certificate in words;
//! - [`health`], [`telemetry`], [`shutdown`], [`service`]: what every process runs on;
//! - `reference` (feature `typescript`): the generator of `docs/reference.md`.
//!
//! Backends written in Rust use this crate to reach users without the HTTP hop (docs/reference.md,
//! Ingress).

#![forbid(unsafe_code)]

pub mod backend;
pub mod bus;
pub mod config;
pub mod contract;
pub mod db;
pub mod health;
#[cfg(feature = "typescript")]
pub mod reference;
pub mod service;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use bus::Bus;
pub use config::{Config, Role};
pub use shutdown::Shutdown;
