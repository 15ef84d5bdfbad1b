//! `conversation:join` and `conversation:leave`: a socket enters or leaves the room
//! `conversation:<id>`, which carries typing indicators and backend emits to that room.
//!
//! Joining asks the owner of conversations (`switchboard-messages`) over the bus whether the
//! user is a participant; the edge has no database of its own. The room is bound on this
//! edge's queue before the join is acknowledged.

use switchboard::{
    bus::{RequestError, topology},
    contract::{
        AckError, Room,
        bus::MembershipQuery,
        client::{ConversationRef, Empty, event},
    },
};

use super::{Context, on};

pub fn register(socket: &socketioxide::extract::SocketRef) {
    on(socket, event::CONVERSATION_JOIN, join);
    on(socket, event::CONVERSATION_LEAVE, leave);
}

async fn join(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    let id = request.conversation_id;
    if cx.client.has_joined(id) {
        return Ok(Empty {});
    }
    let query = MembershipQuery { conversation_id: id, user_id: cx.client.user.clone() };
    let membership = cx
        .app
        .bus
        .request(
            topology::EVENTS_TOPIC,
            topology::keys::MEMBERSHIP_QUERY,
            &query,
            cx.app.config.ack_timeout(),
        )
        .await
        .map_err(request_error)?;
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
    let id = request.conversation_id;
    if cx.client.mark_left(id) {
        let room = Room::Conversation(id);
        cx.socket.leave(room.to_string());
        cx.app.deliveries.remove(&room).await;
    }
    Ok(Empty {})
}

/// The contract's reading of a failed request to a worker.
pub fn request_error(error: RequestError) -> AckError {
    match error {
        RequestError::Timeout => AckError::timeout(),
        RequestError::Refused(error) => error,
        RequestError::Bus(_) | RequestError::Malformed(_) => AckError::unavailable(),
    }
}
