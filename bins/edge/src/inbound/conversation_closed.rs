//! `conversation.closed`: a conversation was closed (unmatch), and every edge hears it. Every
//! local socket leaves its room at once ([`crate::rooms::close`]), so no typing indicator or
//! room emit reaches them any more; later joins are refused by the owner of conversations.

use socketioxide::SocketIo;
use switchboard::{Bus, contract::bus::ConversationClosed};

use crate::bindings::Bindings;

pub async fn handle(io: &SocketIo, bus: &Bus, bindings: &Bindings, closed: ConversationClosed) {
    crate::rooms::close(io, bus, bindings, closed.conversation_id).await
}
