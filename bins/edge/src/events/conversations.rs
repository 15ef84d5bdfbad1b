//! `conversation:join` and `conversation:leave`: a socket enters or leaves the room
//! `conversation:<id>` ([`crate::rooms`]), which carries typing indicators and backend emits to
//! that room.
//!
//! Joining asks the owner of conversations (`switchboard-messages`) over the bus whether the
//! user is a participant; the edge has no database of its own. The room is bound on this
//! edge's queue before the join is acknowledged.

use switchboard::contract::{
    AckError,
    bus::MembershipQuery,
    client::{ConversationRef, Empty, event},
};

use super::handler::{Context, Events};
use crate::rooms;

pub fn register(events: &mut Events) {
    events.on(event::CONVERSATION_JOIN, join);
    events.on(event::CONVERSATION_LEAVE, leave);
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
    rooms::join(&cx.socket, &cx.client, &cx.app.bindings, id).await.map_err(|_| AckError::unavailable())?;
    Ok(Empty {})
}

async fn leave(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    rooms::leave(&cx.socket, &cx.client, &cx.app.bus, &cx.app.bindings, request.conversation_id).await;
    Ok(Empty {})
}
