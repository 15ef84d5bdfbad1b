//! Typing indicators: relayed to the other sockets that joined the conversation through its
//! room, never stored and never confirmed. A start with no stop expires after
//! [`TYPING_EXPIRY`], and the others then get `typing:stop`; so do they when the typist leaves
//! the room or disconnects ([`stopped`]). The client events are in [`crate::events::typing`].

use std::{sync::Arc, time::Duration};

use socketioxide::extract::SocketRef;
use switchboard::{
    Bus,
    backend::deliver,
    bus::Durability,
    contract::{ConversationId, Room, bus::Deliver, server::Typing},
};

use crate::client::Client;

/// How long a `typing:start` lasts without a stop.
pub const TYPING_EXPIRY: Duration = Duration::from_secs(6);

/// The socket started typing in `id`: the others hear it, and hear it stop after
/// [`TYPING_EXPIRY`] unless another start comes first.
pub async fn start(bus: &Bus, socket: &SocketRef, client: &Arc<Client>, id: ConversationId) {
    relay(bus, socket, client, id, Typing::START).await;
    // The expiry: replaced by every new start, cancelled by a stop.
    let (bus, socket, expiring) = (bus.clone(), socket.clone(), client.clone());
    let expiry = tokio::spawn(async move {
        tokio::time::sleep(TYPING_EXPIRY).await;
        if expiring.typing_expired(id) {
            relay(&bus, &socket, &expiring, id, Typing::STOP).await;
        }
    });
    client.set_typing(id, expiry.abort_handle());
}

/// The socket says it stopped typing in `id`.
pub async fn stop(bus: &Bus, socket: &SocketRef, client: &Client, id: ConversationId) {
    client.clear_typing(id);
    relay(bus, socket, client, id, Typing::STOP).await;
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
