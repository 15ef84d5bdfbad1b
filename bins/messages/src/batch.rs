//! One batch of chat commands (`message.send`, `message.read`) from one shard: one
//! transaction, then fan-out, replies, and the caller's acknowledgement (see the crate docs
//! for why in that order). What happens to one bad command in a batch: see [`handle`].

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use lapin::message::Delivery;
use switchboard::{
    Bus,
    backend::deliver_all,
    bus::{BusError, BusMessage, Durability, Envelope, Outgoing, Poison},
    contract::{
        AckError, ConversationId, ErrorCode, MessageId, Room, UserId,
        bus::{Deliver, MarkRead, SendMessage},
        client::{Empty, MessageSent},
        server::{MessageNew, MessageReadEvent, ServerEvent},
    },
    db::{Database, is_transient},
};
use uuid::Uuid;

/// A decoded command and the delivery it came in (where its answer goes).
#[derive(Clone)]
pub enum Command<'a> {
    Send { command: SendMessage, id: Uuid, delivery: &'a Delivery },
    Read { command: MarkRead, delivery: &'a Delivery },
}

impl Command<'_> {
    fn delivery(&self) -> &Delivery {
        match self {
            Command::Send { delivery, .. } | Command::Read { delivery, .. } => delivery,
        }
    }

    fn expires_at(&self) -> DateTime<Utc> {
        match self {
            Command::Send { command, .. } => command.expires_at,
            Command::Read { command, .. } => command.expires_at,
        }
    }
}

/// What the transaction decided for one send.
enum SendOutcome {
    Stored(MessageNew),
    /// Already stored by an earlier delivery or an earlier command with the same
    /// `clientMessageId`; `fan_out` when this is a broker redelivery of the same command,
    /// whose first delivery may have died before its fan-out.
    Existing {
        message: MessageNew,
        fan_out: bool,
    },
    Refused(AckError),
}

/// Why a batch must be tried again: nothing of it was answered or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the database is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Reads a batch from the shard queue `queue`, once: the commands to handle. A command that
/// cannot be read (or of a kind this queue does not carry) is parked in the dead-letter queue
/// and, when its kind is known, answered `invalid`, so it is out of the way before any
/// transaction. `Err` only when the broker could not take a parked copy: the caller retries.
pub async fn prepare<'a>(
    bus: &Bus,
    queue: &str,
    deliveries: &'a [Delivery],
) -> Result<Vec<Command<'a>>, BusError> {
    let mut commands = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let kind = switchboard::bus::kind_of(delivery);
        let decoded = match kind.as_deref() {
            Some(SendMessage::KIND) => Envelope::<SendMessage>::decode(&delivery.data)
                .map(|e| Command::Send { command: e.data, id: e.id, delivery }),
            Some(MarkRead::KIND) => Envelope::<MarkRead>::decode(&delivery.data)
                .map(|e| Command::Read { command: e.data, delivery }),
            other => {
                bus.dead_letter(queue, delivery, &Poison::unknown_kind(other)).await?;
                continue;
            }
        };
        match decoded {
            Ok(command) => commands.push(command),
            Err(error) => {
                bus.dead_letter(queue, delivery, &error.into()).await?;
                let refusal = AckError::invalid("the command could not be read");
                match kind.as_deref() {
                    Some(SendMessage::KIND) => {
                        bus.reply::<SendMessage>(&delivery.properties, Err(refusal)).await
                    }
                    _ => bus.reply::<MarkRead>(&delivery.properties, Err(refusal)).await,
                }
            }
        }
    }
    Ok(commands)
}

/// Handles the commands [`prepare`] read from the shard queue `queue`. `Err` means the
/// database or the broker is away: the same commands should be handled again later (what was
/// committed before the error is found again by its command ids, so nothing is stored twice).
///
/// A command past its expiry is dropped unanswered. A batch the database refuses for a reason
/// that is not transient is stored again one command at a time: the command the database
/// refuses is answered `invalid` and parked in the dead-letter queue, and every other one is
/// stored as usual.
pub async fn handle(
    bus: &Bus,
    database: &Database,
    queue: &str,
    batch: &[Command<'_>],
) -> Result<(), BatchError> {
    // PostgreSQL keeps microseconds: the ack and the stored row must show the same instant.
    let now = Utc::now().trunc_subsecs(6);
    // Past its expiry the sender was told `timeout`: it must not happen now.
    let commands: Vec<Command<'_>> = batch.iter().filter(|c| c.expires_at() > now).cloned().collect();
    metrics::counter!("messages_expired_total").increment((batch.len() - commands.len()) as u64);
    if commands.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let error = match store_once(database, &commands, now).await {
        Ok(decisions) => {
            metrics::histogram!("messages_batch_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("messages_batch_size").record(commands.len() as f64);
            publish(bus, &commands, decisions).await;
            return Ok(());
        }
        Err(error) => error,
    };
    if is_transient(&error) {
        return Err(error.into());
    }
    if commands.len() == 1 {
        return refuse(bus, queue, &commands, error).await;
    }
    tracing::warn!(%error, commands = commands.len(), "the database refused a batch; storing its commands one by one");
    for one in commands.chunks(1) {
        match store_once(database, one, now).await {
            Ok(decisions) => publish(bus, one, decisions).await,
            Err(error) if is_transient(&error) => return Err(error.into()),
            Err(error) => refuse(bus, queue, one, error).await?,
        }
    }
    Ok(())
}

/// One command whose data the database refuses for good: answered `invalid` and parked in the
/// dead-letter queue for an operator to look at.
async fn refuse(bus: &Bus, queue: &str, one: &[Command<'_>], error: sqlx::Error) -> Result<(), BatchError> {
    for command in one {
        bus.dead_letter(queue, command.delivery(), &Poison::refused(&error)).await?;
    }
    metrics::counter!("messages_refused_total").increment(one.len() as u64);
    publish(bus, one, Decisions::refused(one)).await;
    Ok(())
}

/// [`store`], and a second, thorough pass after a unique violation: another writer stored one
/// of these commands meanwhile (possible only while shard ownership moves), and the second
/// pass finds those rows.
async fn store_once(
    database: &Database,
    commands: &[Command<'_>],
    now: DateTime<Utc>,
) -> Result<Decisions, sqlx::Error> {
    match store(database, commands, now, false).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            store(database, commands, now, true).await
        }
        other => other,
    }
}

/// What the transaction decided, in command order.
struct Decisions {
    sends: Vec<SendOutcome>,
    reads: Vec<Result<MessageReadEvent, AckError>>,
    participants: HashMap<ConversationId, Vec<UserId>>,
}

impl Decisions {
    /// Every command refused as `invalid`: the database will not store its data.
    fn refused(commands: &[Command<'_>]) -> Self {
        let refusal = || AckError::invalid("the message could not be stored");
        let mut decisions = Decisions { sends: Vec::new(), reads: Vec::new(), participants: HashMap::new() };
        for command in commands {
            match command {
                Command::Send { .. } => decisions.sends.push(SendOutcome::Refused(refusal())),
                Command::Read { .. } => decisions.reads.push(Err(refusal())),
            }
        }
        decisions
    }
}

/// Stores a batch with one call of `switchboard_chat_batch` (migrations/, where the rules are
/// written out): one round trip and one transaction. With `thorough`, every send is also
/// looked up by its command id, not only broker redeliveries.
async fn store(
    database: &Database,
    commands: &[Command<'_>],
    now: DateTime<Utc>,
    thorough: bool,
) -> Result<Decisions, sqlx::Error> {
    let mut sends = SendColumns::default();
    let (mut read_conversations, mut readers, mut read_messages) = (Vec::new(), Vec::new(), Vec::new());
    for command in commands {
        match command {
            Command::Send { command, id, delivery } => {
                sends.conversation.push(command.conversation_id.0);
                sends.sender.push(command.sender_id.to_string());
                sends.content.push(command.content.as_str().to_owned());
                sends.client_id.push(command.client_message_id.as_ref().map(|c| c.as_str().to_owned()));
                sends.command.push(*id);
                // A command delivered for the first time cannot have been stored before.
                sends.look_up_command.push(delivery.redelivered || thorough);
                sends.message.push(MessageId::new().0);
            }
            Command::Read { command, .. } => {
                read_conversations.push(command.conversation_id.0);
                readers.push(command.user_id.to_string());
                read_messages.push(command.message_id.0);
            }
        }
    }
    let rows: Vec<BatchRow> = sqlx::query_as(
        "SELECT part, idx, outcome, message_id, conversation_id, seq, sender_id, content, client_message_id, \
         created_at, users FROM switchboard_chat_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&sends.conversation)
    .bind(&sends.sender)
    .bind(&sends.content)
    .bind(&sends.client_id)
    .bind(&sends.command)
    .bind(&sends.look_up_command)
    .bind(&sends.message)
    .bind(&read_conversations)
    .bind(&readers)
    .bind(&read_messages)
    .bind(now)
    .fetch_all(database.pool())
    .await?;

    let mut decisions = Decisions {
        sends: Vec::with_capacity(sends.conversation.len()),
        reads: Vec::with_capacity(readers.len()),
        participants: HashMap::new(),
    };
    let reads: Vec<&MarkRead> = commands
        .iter()
        .filter_map(|c| if let Command::Read { command, .. } = c { Some(command) } else { None })
        .collect();
    let redelivered: Vec<bool> = commands
        .iter()
        .filter_map(
            |c| if let Command::Send { delivery, .. } = c { Some(delivery.redelivered) } else { None },
        )
        .collect();
    // The function answers sends, then reads, each in batch order, then the participants.
    for mut row in rows {
        let (part, outcome) = (std::mem::take(&mut row.part), row.outcome.take());
        match (part.as_str(), outcome.as_deref()) {
            ("send", Some("forbidden")) => decisions.sends.push(SendOutcome::Refused(AckError::forbidden())),
            ("send", Some(outcome)) => {
                let index = row.index();
                let message = row.into_message().ok_or_else(|| malformed("a send without its message"))?;
                decisions.sends.push(match outcome {
                    "stored" => SendOutcome::Stored(message),
                    // A broker redelivery of the same command: its first delivery may have died
                    // before its fan-out, so it is fanned out again.
                    "redelivered" => SendOutcome::Existing {
                        message,
                        fan_out: redelivered.get(index).copied().unwrap_or(false),
                    },
                    _ => SendOutcome::Existing { message, fan_out: false },
                });
            }
            ("read", outcome) => {
                let read = reads.get(row.index()).ok_or_else(|| malformed("a read out of range"))?;
                decisions.reads.push(match outcome {
                    Some("read") => Ok(MessageReadEvent {
                        conversation_id: read.conversation_id,
                        message_id: read.message_id,
                        user_id: read.user_id.clone(),
                        read_at: now,
                    }),
                    Some("forbidden") => Err(AckError::forbidden()),
                    _ => Err(AckError::new(ErrorCode::NotFound, "no such message in this conversation")),
                });
            }
            ("participants", _) => {
                if let Some(conversation) = row.conversation_id {
                    let users =
                        row.users.unwrap_or_default().into_iter().filter_map(|u| u.parse().ok()).collect();
                    decisions.participants.insert(ConversationId(conversation), users);
                }
            }
            _ => return Err(malformed("an unknown part")),
        }
    }
    if decisions.sends.len() != sends.conversation.len() || decisions.reads.len() != reads.len() {
        return Err(malformed("not one answer per command"));
    }
    Ok(decisions)
}

/// The function's answer did not have the shape this build expects (a schema from another
/// version): permanent, like any other refusal.
fn malformed(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("switchboard_chat_batch answered {what}"))
}

/// The send columns of one `switchboard_chat_batch` call.
#[derive(Default)]
struct SendColumns {
    conversation: Vec<Uuid>,
    sender: Vec<String>,
    content: Vec<String>,
    client_id: Vec<Option<String>>,
    command: Vec<Uuid>,
    look_up_command: Vec<bool>,
    message: Vec<Uuid>,
}

/// One row of `switchboard_chat_batch`.
#[derive(sqlx::FromRow)]
struct BatchRow {
    part: String,
    idx: Option<i32>,
    outcome: Option<String>,
    message_id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    seq: Option<i64>,
    sender_id: Option<String>,
    content: Option<String>,
    client_message_id: Option<String>,
    created_at: Option<DateTime<Utc>>,
    users: Option<Vec<String>>,
}

impl BatchRow {
    /// The 0-based place of the command among the batch's sends or reads.
    fn index(&self) -> usize {
        self.idx.and_then(|i| usize::try_from(i).ok()).unwrap_or(0).saturating_sub(1)
    }

    fn into_message(self) -> Option<MessageNew> {
        Some(MessageNew {
            id: MessageId(self.message_id?),
            conversation_id: ConversationId(self.conversation_id?),
            sender_id: self.sender_id?.parse().ok()?,
            content: self.content?,
            seq: self.seq?,
            created_at: self.created_at?,
            client_message_id: self.client_message_id.and_then(|c| c.try_into().ok()),
        })
    }
}

/// After commit: fan-out (confirmed, all at once), then each sender's reply.
async fn publish(bus: &Bus, commands: &[Command<'_>], decisions: Decisions) {
    let Decisions { sends, reads, participants } = decisions;
    let mut fan_out = Vec::new();
    let mut replies = Vec::new();
    let mut sends = sends.into_iter();
    let mut reads = reads.into_iter();
    for command in commands {
        match command {
            Command::Send { command, delivery, .. } => {
                let Some(outcome) = sends.next() else { break };
                let (reply, message) = match outcome {
                    SendOutcome::Stored(message) => (Ok(sent(&message)), Some(message)),
                    SendOutcome::Existing { message, fan_out } => {
                        (Ok(sent(&message)), fan_out.then_some(message))
                    }
                    SendOutcome::Refused(error) => (Err(error), None),
                };
                if let Some(message) = message {
                    let rooms = rooms_of(participants.get(&message.conversation_id), None);
                    fan_out.push(Deliver::server_event(
                        rooms,
                        MessageNew::NAME,
                        &message,
                        command.sender_socket.clone(),
                    ));
                    metrics::counter!("messages_stored_total").increment(1);
                }
                replies.push(Outgoing::new::<SendMessage>(&delivery.properties, reply));
            }
            Command::Read { command, delivery } => {
                let Some(outcome) = reads.next() else { break };
                if let Ok(read) = &outcome {
                    let rooms = rooms_of(participants.get(&read.conversation_id), Some(&read.user_id));
                    fan_out.push(Deliver::server_event(
                        rooms,
                        MessageReadEvent::NAME,
                        read,
                        command.reader_socket.clone(),
                    ));
                }
                replies.push(Outgoing::new::<MarkRead>(&delivery.properties, outcome.map(|_| Empty {})));
            }
        }
    }
    // As few broker messages as the batch allows: one per edge for the whole batch.
    for error in deliver_all(bus, fan_out, Durability::Confirmed).await {
        // The message is stored; receivers that miss it catch up with messages:sync.
        tracing::warn!(%error, "a fan-out was not confirmed");
    }
    // One message per requesting edge, however many of its commands this batch answered.
    bus.reply_many(replies).await;
}

fn sent(message: &MessageNew) -> MessageSent {
    MessageSent { message_id: message.id, seq: message.seq, created_at: message.created_at }
}

/// The user rooms of a conversation's participants, leaving out `except`.
fn rooms_of(participants: Option<&Vec<UserId>>, except: Option<&UserId>) -> Vec<Room> {
    participants
        .into_iter()
        .flatten()
        .filter(|user| Some(*user) != except)
        .map(|user| Room::User(user.clone()))
        .collect()
}

/// A row of `messages`, as every query of this crate reads it.
#[derive(sqlx::FromRow)]
pub struct StoredRow {
    id: Uuid,
    conversation_id: Uuid,
    seq: i64,
    sender_id: String,
    content: String,
    client_message_id: Option<String>,
    created_at: DateTime<Utc>,
}

impl StoredRow {
    pub fn into_message(self) -> MessageNew {
        MessageNew {
            id: MessageId(self.id),
            conversation_id: ConversationId(self.conversation_id),
            sender_id: self.sender_id.parse().unwrap_or_else(|_| "unknown".parse().expect("valid")),
            content: self.content,
            seq: self.seq,
            created_at: self.created_at,
            client_message_id: self.client_message_id.and_then(|c| c.try_into().ok()),
        }
    }
}
