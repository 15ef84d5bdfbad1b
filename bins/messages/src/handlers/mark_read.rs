//! `message.read`: a socket's `message:read`, a read receipt, published by its edge to the
//! conversation's shard queue (alone, or in a [`RequestBatch`](super::request_batch)) and
//! stored with the rest of its batch ([`crate::batch`]); this module is what is particular to a
//! read: its columns in the batch function's call, what the call decided for it, and its
//! fan-out and answer.
//!
//! Participant only (`forbidden`); the message must be one of that conversation
//! (`not_found`). The reader's receipt only moves forward, never back. After commit the other
//! participants get `message:read` and the reader its answer.

use chrono::{DateTime, Utc};
use switchboard::contract::{
    AckError, ErrorCode,
    bus::{Deliver, MarkRead},
    client::Empty,
    server::{MessageReadEvent, ServerEvent},
};
use uuid::Uuid;

use crate::batch::{Command, FanOut};

/// The read columns of one `switchboard_chat_batch` call, and the reads in batch order.
#[derive(Default)]
pub(crate) struct Columns<'a> {
    pub(crate) conversation: Vec<Uuid>,
    pub(crate) reader: Vec<String>,
    pub(crate) message: Vec<Uuid>,
    reads: Vec<&'a MarkRead>,
}

impl<'a> Columns<'a> {
    pub(crate) fn push(&mut self, read: &'a MarkRead) {
        self.conversation.push(read.conversation_id.0);
        self.reader.push(read.user_id.to_string());
        self.message.push(read.message_id.0);
        self.reads.push(read);
    }

    /// The read at this 0-based place among the batch's reads.
    pub(crate) fn get(&self, index: usize) -> Option<&'a MarkRead> {
        self.reads.get(index).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.reads.len()
    }
}

/// What the batch function's `read` row with `outcome` says of `read`, read `now`.
pub(crate) fn decided(
    read: &MarkRead,
    outcome: Option<&str>,
    now: DateTime<Utc>,
) -> Result<MessageReadEvent, AckError> {
    match outcome {
        Some("read") => Ok(MessageReadEvent {
            conversation_id: read.conversation_id,
            message_id: read.message_id,
            user_id: read.user_id.clone(),
            read_at: now,
        }),
        Some("forbidden") => Err(AckError::forbidden()),
        _ => Err(AckError::new(ErrorCode::NotFound, "no such message in this conversation")),
    }
}

/// After commit: `message:read` to the other participants (but the reading socket) for a read
/// that was recorded, and the reader's answer.
pub(crate) fn publish<'a>(
    command: &'a Command,
    outcome: Result<MessageReadEvent, AckError>,
    gathered: &mut FanOut<'a>,
) {
    if let Ok(event) = &outcome {
        gathered.read(event);
        let rooms = gathered.rooms(&event.conversation_id, Some(&event.user_id));
        let item = Deliver::server_event(rooms, MessageReadEvent::NAME, event, command.socket());
        gathered.deliver(command, item);
    }
    gathered.reply(command.reply::<MarkRead>(outcome.map(|_| Empty {})));
}
