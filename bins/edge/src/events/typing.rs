//! `typing:start` and `typing:stop`: allowed in a conversation the socket joined; what they
//! cause (the relay to the room, the expiry) is [`crate::typing`].

use switchboard::contract::{
    AckError,
    client::{ConversationRef, Empty, event},
};

use super::handler::{Context, Events};

pub fn register(events: &mut Events) {
    events.on(event::TYPING_START, start);
    events.on(event::TYPING_STOP, stop);
}

async fn start(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    let id = request.conversation_id;
    if !cx.client.has_joined(id) {
        return Err(AckError::forbidden());
    }
    crate::typing::start(&cx.app.bus, &cx.socket, &cx.client, id).await;
    Ok(Empty {})
}

async fn stop(cx: Context, request: ConversationRef) -> Result<Empty, AckError> {
    let id = request.conversation_id;
    if !cx.client.has_joined(id) {
        return Err(AckError::forbidden());
    }
    crate::typing::stop(&cx.app.bus, &cx.socket, &cx.client, id).await;
    Ok(Empty {})
}
