//! `message:send`, `message:read` and `messages:sync`: commands and queries for the owner of
//! conversations (`switchboard-messages`), which checks membership itself.
//!
//! Sends and reads go to the conversation's shard queue, through that shard's
//! [`RequestBatcher`](switchboard::bus::RequestBatcher): what arrives for a shard while its
//! last message is on its way to the broker goes out together in the next one. One socket's
//! commands are queued strictly in the order the socket sent them, even when it does not wait
//! for acks: every event takes a [`Turn`](crate::client::Turn) in arrival order, and a
//! command is queued only once every earlier event of the socket was queued or dropped; the
//! batcher publishes in queue order. Waiting for the broker's confirm and for the reply
//! happens after the turn is passed on, so neither holds the socket's next command up.

use chrono::Utc;
use switchboard::{
    bus::{Request, Routed, Shard},
    contract::{
        AckError, ConversationId,
        bus::{MarkRead, SendMessage, SyncQuery},
        client::{Empty, MessageRead, MessageSend, MessageSent, MessagesPage, MessagesSync, event},
    },
};

use super::handler::{Context, Events, request_error};

pub fn register(events: &mut Events) {
    events.on_ordered(event::MESSAGE_SEND, send);
    events.on_ordered(event::MESSAGE_READ, read);
    events.on(event::MESSAGES_SYNC, sync);
}

async fn send(cx: Context, request: MessageSend) -> Result<MessageSent, AckError> {
    let command = SendMessage {
        conversation_id: request.conversation_id,
        sender_id: cx.client.user.clone(),
        sender_socket: Some(cx.socket.id.to_string()),
        content: request.content,
        client_message_id: request.client_message_id,
        expires_at: Utc::now() + cx.app.config.ack_timeout(),
    };
    in_order(cx, request.conversation_id, command).await
}

async fn read(cx: Context, request: MessageRead) -> Result<Empty, AckError> {
    let command = MarkRead {
        conversation_id: request.conversation_id,
        message_id: request.message_id,
        user_id: cx.client.user.clone(),
        reader_socket: Some(cx.socket.id.to_string()),
        expires_at: Utc::now() + cx.app.config.ack_timeout(),
    };
    in_order(cx, request.conversation_id, command).await
}

/// Queues a command for its conversation's shard in the socket's order, then waits for the
/// answer. The socket's turn is passed on as soon as the command is queued: the broker's
/// confirm and the worker's answer are waited for after, so a socket that does not wait for
/// acks gets its commands into the same batch. A command the shard has no place
/// for (see [`admission`](crate::admission)) is answered `unavailable` without being published.
async fn in_order<R: Request + Routed>(
    cx: Context,
    conversation: ConversationId,
    command: R,
) -> Result<R::Response, AckError> {
    let Context { turn, app, .. } = cx;
    if let Some(turn) = &turn {
        turn.wait().await;
    }
    let _place = app.admission.admit(conversation)?;
    let published = app.shards[Shard::of(conversation).index()].send(&command);
    drop(turn);
    let pending = published.confirmed().await.map_err(request_error)?;
    pending.reply().await.map_err(request_error)
}

async fn sync(cx: Context, request: MessagesSync) -> Result<MessagesPage, AckError> {
    let query = SyncQuery {
        conversation_id: request.conversation_id,
        user_id: Some(cx.client.user.clone()),
        after_seq: request.after_seq,
        limit: request.page_size(),
    };
    cx.ask(&query).await
}
