//! `conversation:join` and `conversation:leave`: a socket enters or leaves the room
//! `conversation:<id>`, which carries typing indicators and backend emits to that room.
//!
//! Joining asks the owner of conversations (`switchboard-messages`) over the bus whether the
//! user is a participant; the edge has no database of its own. The room is bound on this
//! edge's queue before the join is acknowledged.

use std::sync::Arc;

use socketioxide::{SocketIo, extract::SocketRef};
use switchboard::contract::{
    AckError, ConversationId, Room,
    bus::MembershipQuery,
    client::{ConversationRef, Empty, event},
};

use super::{Context, on};
use crate::{connection::Client, delivery::Deliveries};

pub fn register(socket: &SocketRef) {
    on(socket, event::CONVERSATION_JOIN, join);
    on(socket, event::CONVERSATION_LEAVE, leave);
}

async fn join(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    let id = request.conversation_id;
    if cx.client.has_joined(id) {
        return Ok(Empty {});
    }
    let query = MembershipQuery { conversation_id: id, user_id: cx.client.user.clone() };
    let membership = cx.ask(&query).await?;
    if !membership.member {
        return Err(AckError::forbidden());
    }
    let room = Room::Conversation(id);
    cx.app.deliveries.add(&room).await.map_err(|_| AckError::unavailable())?;
    if cx.client.mark_joined(id) {
        cx.socket.join(room.to_string());
    } else {
        // A concurrent join of the same conversation won the race and holds the binding.
        cx.app.deliveries.remove(&room).await;
    }
    Ok(Empty {})
}

async fn leave(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    leave_room(&cx.socket, &cx.client, &cx.app.deliveries, request.conversation_id).await;
    Ok(Empty {})
}

/// Takes a socket out of a conversation room (a leave, a disconnect, or the conversation
/// being closed): its typing stops and its hold on the room's binding is released.
pub async fn leave_room(socket: &SocketRef, client: &Client, deliveries: &Deliveries, id: ConversationId) {
    if client.mark_left(id) {
        let room = Room::Conversation(id);
        socket.leave(room.to_string());
        super::typing::stopped(&deliveries.bus, socket, client, id).await;
        deliveries.remove(&room).await;
    }
}

/// A conversation was closed (unmatch): every local socket leaves its room at once, so no
/// typing indicator or room emit reaches them any more; later joins are refused by the
/// owner of conversations.
pub async fn closed(io: &SocketIo, deliveries: &Deliveries, id: ConversationId) {
    let room = Room::Conversation(id).to_string();
    for socket in io.within(room).sockets() {
        if let Some(client) = socket.extensions.get::<Arc<Client>>() {
            leave_room(&socket, &client, deliveries, id).await;
        }
    }
}
