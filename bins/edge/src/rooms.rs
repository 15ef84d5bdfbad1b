//! Conversation rooms on this edge: a socket in `conversation:<id>` gets typing indicators and
//! backend emits to that room. Entering holds the room's binding ([`Bindings::add`]); every
//! way out (a leave, a disconnect, the conversation closed on every edge) goes through
//! [`leave`], which stops the socket's typing there and gives the binding back. Who may enter
//! is decided before, by the owner of conversations ([`crate::events::conversations`]).

use std::sync::Arc;

use socketioxide::{SocketIo, extract::SocketRef};
use switchboard::{
    Bus,
    bus::BusError,
    contract::{ConversationId, Room},
};

use crate::{bindings::Bindings, client::Client};

/// Puts the socket in the room of `id`, once the room is bound here. Joining twice is one join.
pub async fn join(
    socket: &SocketRef,
    client: &Client,
    bindings: &Bindings,
    id: ConversationId,
) -> Result<(), BusError> {
    let room = Room::Conversation(id);
    bindings.add(&room).await?;
    if client.mark_joined(id) {
        socket.join(room.to_string());
    } else {
        // A concurrent join of the same conversation won the race and holds the binding.
        bindings.remove(&room).await;
    }
    Ok(())
}

/// Takes a socket out of a conversation room (a leave, a disconnect, or the conversation
/// being closed): its typing stops and its hold on the room's binding is released.
pub async fn leave(socket: &SocketRef, client: &Client, bus: &Bus, bindings: &Bindings, id: ConversationId) {
    if client.mark_left(id) {
        let room = Room::Conversation(id);
        socket.leave(room.to_string());
        crate::typing::stopped(bus, socket, client, id).await;
        bindings.remove(&room).await;
    }
}

/// A conversation was closed (unmatch): every local socket leaves its room at once.
pub async fn close(io: &SocketIo, bus: &Bus, bindings: &Bindings, id: ConversationId) {
    let room = Room::Conversation(id).to_string();
    for socket in io.within(room).sockets() {
        if let Some(client) = socket.extensions.get::<Arc<Client>>() {
            leave(&socket, &client, bus, bindings, id).await;
        }
    }
}
