//! Client events (docs/reference.md, Client events): one module per event family, and the one place that
//! turns a handler's result into the contract's acknowledgement.
//!
//! A family registers its events in the one table of [`handler::Events`], once for all sockets. Before a handler runs, the wrapper applies the
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

use std::sync::{Arc, LazyLock};

use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};

use crate::{app::App, client::Turn};
use handler::{Call, Events};

/// Every family's events, registered once.
static EVENTS: LazyLock<Events> = LazyLock::new(|| {
    let mut events = Events::default();
    conversations::register(&mut events);
    messages::register(&mut events);
    notifications::register(&mut events);
    presence::register(&mut events);
    typing::register(&mut events);
    events
});

/// Gives a newly connected socket its events: one handler, of no size, that looks each event
/// up in the shared table.
pub fn register(socket: &SocketRef) {
    socket.on_fallback(dispatch);
}

async fn dispatch(
    socket: SocketRef,
    Event(name): Event,
    turn: Turn,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(app): State<Arc<App>>,
) {
    let call = Call { socket, turn, data: data.map_err(|e| e.to_string()), ack, app };
    EVENTS.handle(&name, call).await
}
