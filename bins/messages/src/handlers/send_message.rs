//! `message.send`: a socket's `message:send`, published by its edge to the conversation's shard
//! queue (alone, or in a [`RequestBatch`](super::request_batch)). It is stored with the rest of
//! its batch, in one call of the batch function ([`crate::batch`]); this module is what is
//! particular to a send: its columns in that call, what the call decided for it, and its
//! fan-out and answer.
//!
//! The sender must be a participant of the open conversation (`forbidden` otherwise). A stored
//! message gets its conversation's next `seq`: contiguous, never repeated, in the queue's order.
//! A send is stored once: a command stored before (found by its command id) or a retry with
//! the same `clientMessageId` in the same conversation is answered with the original message,
//! and nothing new is stored. Success is answered only after `COMMIT`. The other participants'
//! sockets then get `message:new` (at least once: a redelivered command is fanned out again,
//! and clients drop a repeated message `id`), and the sender's answer travels inside that
//! fan-out when its edge takes it so (see [`publish`](crate::batch::publish)).

use switchboard::contract::{
    AckError, MessageId, Room,
    bus::{Deliver, SendMessage},
    client::MessageSent,
    server::{MessageNew, ServerEvent},
};
use uuid::Uuid;

use crate::batch::{BatchRow, Command, FanOut, malformed};

/// The send columns of one `switchboard_chat_batch` call.
#[derive(Default)]
pub(crate) struct Columns {
    pub(crate) conversation: Vec<Uuid>,
    pub(crate) sender: Vec<String>,
    pub(crate) content: Vec<String>,
    pub(crate) client_id: Vec<Option<String>>,
    pub(crate) command: Vec<Uuid>,
    pub(crate) look_up_command: Vec<bool>,
    pub(crate) message: Vec<Uuid>,
}

impl Columns {
    /// Adds `send`, the body of `command`. With `thorough` (the second pass after a unique
    /// violation), the send is also looked up by its command id when it was not redelivered.
    pub(crate) fn push(&mut self, command: &Command, send: &SendMessage, thorough: bool) {
        self.conversation.push(send.conversation_id.0);
        self.sender.push(send.sender_id.to_string());
        self.content.push(send.content.as_str().to_owned());
        self.client_id.push(send.client_message_id.as_ref().map(|c| c.as_str().to_owned()));
        self.command.push(command.id);
        // A command delivered for the first time cannot have been stored before.
        let redelivered = command.delivery.redelivered;
        self.look_up_command.push(redelivered || thorough);
        self.message.push(MessageId::new().0);
    }
}

/// What the transaction decided for one send.
pub(crate) enum SendOutcome {
    Stored(MessageNew),
    /// Already stored by an earlier delivery or an earlier command with the same
    /// `clientMessageId`; `fan_out` when it was this same command (a redelivery, or a retry
    /// after a commit whose answer was lost), whose fan-out may never have happened.
    Existing {
        message: MessageNew,
        fan_out: bool,
    },
    Refused(AckError),
}

/// What the batch function's `send` row with `outcome` says of its send.
pub(crate) fn decided(outcome: &str, row: BatchRow) -> Result<SendOutcome, sqlx::Error> {
    if outcome == "forbidden" {
        return Ok(SendOutcome::Refused(AckError::forbidden()));
    }
    let message = row.into_message().ok_or_else(|| malformed("a send without its message"))?;
    Ok(match outcome {
        "stored" => SendOutcome::Stored(message),
        // This very command (its id) was stored before: by a delivery that died before
        // its fan-out (a broker redelivery), or by this worker's own earlier attempt
        // whose commit went through but whose answer was lost (a database failover),
        // after which nothing was fanned out. Either way its recipients may never
        // have had it, so it is fanned out again: at least once, and a client that
        // sees a seq twice drops the second.
        "redelivered" => SendOutcome::Existing { message, fan_out: true },
        _ => SendOutcome::Existing { message, fan_out: false },
    })
}

/// After commit: the send's answer, and its `message:new` to the conversation's participants
/// (but the sending socket) when it has one to fan out.
pub(crate) fn publish<'a>(command: &'a Command, outcome: SendOutcome, gathered: &mut FanOut<'a>) {
    let (reply, message) = match outcome {
        SendOutcome::Stored(message) => (Ok(sent(&message)), Some(message)),
        SendOutcome::Existing { message, fan_out } => (Ok(sent(&message)), fan_out.then_some(message)),
        SendOutcome::Refused(error) => (Err(error), None),
    };
    let reply = command.reply::<SendMessage>(reply);
    let Some(message) = message else {
        gathered.reply(reply);
        return;
    };
    let rooms = gathered.rooms(&message.conversation_id, None);
    let mut item = Deliver::server_event(rooms, MessageNew::NAME, &message, command.socket());
    gathered.stored(&message);
    if command.takes_ack_in_fan_out()
        && item.except_socket.is_some()
        && item.rooms.contains(&Room::User(message.sender_id.clone()))
    {
        item.reply = reply.batched();
    }
    match item.reply {
        Some(_) => gathered.reply_inside(reply),
        None => gathered.reply(reply),
    }
    gathered.deliver(command, item);
    metrics::counter!("messages_stored_total").increment(1);
}

fn sent(message: &MessageNew) -> MessageSent {
    MessageSent { message_id: message.id, seq: message.seq, created_at: message.created_at }
}
