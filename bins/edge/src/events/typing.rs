//! `typing:start` and `typing:stop`: transient, relayed to the other sockets that joined the
//! conversation through its room, never stored and never confirmed. A start with no stop
//! expires after [`TYPING_EXPIRY`], and the others then get `typing:stop`; so do they when the
//! typist leaves the room or disconnects.

use std::time::Duration;

use socketioxide::extract::SocketRef;
use switchboard::{
    Bus,
    backend::deliver,
    bus::Durability,
    contract::{
        AckError, ConversationId, Room,
        bus::Deliver,
        client::{ConversationRef, Empty, event},
        server::Typing,
    },
};

use super::{Context, on};
use crate::connection::Client;

/// How long a `typing:start` lasts without a stop.
pub const TYPING_EXPIRY: Duration = Duration::from_secs(6);

pub fn register(socket: &SocketRef) {
    on(socket, event::TYPING_START, start);
    on(socket, event::TYPING_STOP, stop);
}

async fn start(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    let id = request.conversation_id;
    if !cx.client.has_joined(id) {
        return Err(AckError::forbidden());
    }
    relay(&cx.app.bus, &cx.socket, &cx.client, id, Typing::START).await;
    // The expiry: replaced by every new start, cancelled by a stop.
    let (bus, socket, client) = (cx.app.bus.clone(), cx.socket.clone(), cx.client.clone());
    let expiry = tokio::spawn(async move {
        tokio::time::sleep(TYPING_EXPIRY).await;
        if client.typing_expired(id) {
            relay(&bus, &socket, &client, id, Typing::STOP).await;
        }
    });
    cx.client.set_typing(id, expiry.abort_handle());
    Ok(Empty {})
}

async fn stop(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    let id = request.conversation_id;
    if !cx.client.has_joined(id) {
        return Err(AckError::forbidden());
    }
    cx.client.clear_typing(id);
    relay(&cx.app.bus, &cx.socket, &cx.client, id, Typing::STOP).await;
    Ok(Empty {})
}

/// The socket stopped typing because it left the room or disconnected: tell the others if it
/// was typing.
pub async fn stopped(bus: &Bus, socket: &SocketRef, client: &Client, id: ConversationId) {
    if client.clear_typing(id) {
        relay(bus, socket, client, id, Typing::STOP).await;
    }
}

async fn relay(bus: &Bus, socket: &SocketRef, client: &Client, id: ConversationId, name: &'static str) {
    let typing = Typing { conversation_id: id, user_id: client.user.clone() };
    let delivery =
        Deliver::server_event(vec![Room::Conversation(id)], name, &typing, Some(socket.id.to_string()));
    if let Err(error) = deliver(bus, delivery, Durability::Transient).await {
        tracing::debug!(%error, "a typing indicator was dropped");
    }
}
