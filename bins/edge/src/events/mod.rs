//! Client events (docs/reference.md, Client events): one module per event family, and the one place that
//! turns a handler's result into the contract's acknowledgement.
//!
//! A family registers its events with [`handler::on`]. Before a handler runs, the wrapper applies the
//! socket's rate limit and then its user's budget on this edge (`rate_limited` either way;
//! see [`crate::limits`]), parses the payload into its contract type (`invalid`,
//! with the reason; a payload must be a JSON object, see `switchboard::contract::object`), and
//! bounds the handler by `ACK_TIMEOUT_MS` (`timeout`). Whatever happens,
//! bad input never closes the socket and never reaches another user, and a handler cannot
//! panic the connection: it returns `Result<Reply, AckError>`.
//!
//! An event name no family registered is answered `invalid` when it carries an ack.

pub mod conversations;
pub mod handler;
pub mod messages;
pub mod notifications;
pub mod presence;
pub mod typing;

use socketioxide::extract::SocketRef;

/// Registers every family's events on a newly connected socket.
pub fn register(socket: &SocketRef) {
    conversations::register(socket);
    messages::register(socket);
    notifications::register(socket);
    presence::register(socket);
    typing::register(socket);
    handler::on_unknown(socket);
}
