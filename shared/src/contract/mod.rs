//! The contract's types, defined once (docs/reference.md, Connecting, Client events, Server events and Ingress).
//!
//! - [`ids`]: the identifiers, validated when they are parsed;
//! - [`client`]: what a client sends and what its acknowledgement carries (docs/reference.md, Client events);
//! - [`server`]: what the server pushes to sockets (docs/reference.md, Server events);
//! - [`object`]: payloads are JSON objects: the one way outside input is decoded;
//! - [`text`]: the rules for text people write (message content, notifications);
//! - [`ingress`]: the bodies of the HTTP ingress for backends, and their OpenAPI schemas;
//! - [`ack`]: the success/failure envelope of every acknowledgement and its error codes;
//! - [`bus`]: the bodies of bus messages, documented for other languages in `docs/asyncapi.yaml`;
//! - [`domain`]: the domain events backends can subscribe to on the bus;
//! - `typescript` (feature `typescript`): the same client-facing types, ingress bodies and event
//!   maps in TypeScript, for the kit in `clients/typescript`.
//!
//! Deserializing one of these types validates it: a payload that parses is a payload the
//! contract allows, so handlers never re-check shapes.

pub mod ack;
pub mod bus;
pub mod client;
pub mod domain;
pub mod ids;
pub mod ingress;
pub mod object;
pub mod server;
pub mod text;
#[cfg(feature = "typescript")]
pub mod typescript;

pub use ack::{AckError, ErrorCode};
pub use ids::{ConversationId, MatchId, MessageId, NotificationId, Room, UserId};
