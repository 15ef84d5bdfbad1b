//! One batch of chat commands (`message.send`, `message.read`) from one shard: one
//! transaction, then fan-out, replies, and the caller's acknowledgement (see the crate docs
//! for why in that order). What happens to one bad command in a batch: see [`handle`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use lapin::{BasicProperties, message::Delivery};
use switchboard::{
    Bus,
    backend::deliver,
    bus::{BusError, BusMessage, Durability, Envelope, Poison},
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

async fn store(
    database: &Database,
    commands: &[Command<'_>],
    now: DateTime<Utc>,
    thorough: bool,
) -> Result<Decisions, sqlx::Error> {
    let mut tx = database.pool().begin().await?;

    // Participants of every open conversation the batch touches: one query.
    let conversation_ids: Vec<Uuid> = commands
        .iter()
        .map(|c| match c {
            Command::Send { command, .. } => command.conversation_id.0,
            Command::Read { command, .. } => command.conversation_id.0,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<(Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT c.id, array_agg(p.user_id ORDER BY p.user_id) FROM conversations c \
         JOIN conversation_participants p ON p.conversation_id = c.id \
         WHERE c.id = ANY($1) AND c.closed_at IS NULL GROUP BY c.id",
    )
    .bind(&conversation_ids)
    .fetch_all(&mut *tx)
    .await?;
    let participants: HashMap<ConversationId, Vec<UserId>> = rows
        .into_iter()
        .map(|(id, users)| (ConversationId(id), users.into_iter().filter_map(|u| u.parse().ok()).collect()))
        .collect();
    let member = |conversation: &ConversationId, user: &UserId| {
        participants.get(conversation).is_some_and(|users| users.contains(user))
    };

    // Sends already stored: by command id (a redelivery) or by clientMessageId (a retry). A
    // command delivered for the first time cannot have been stored, so only redeliveries are
    // looked up by id, unless this is the second pass after a unique violation.
    let mut command_ids = Vec::new();
    let (mut retry_conversations, mut retry_senders, mut retry_ids) = (Vec::new(), Vec::new(), Vec::new());
    for command in commands {
        if let Command::Send { command, id, delivery } = command {
            if delivery.redelivered || thorough {
                command_ids.push(*id);
            }
            if let Some(cmid) = &command.client_message_id {
                retry_conversations.push(command.conversation_id.0);
                retry_senders.push(command.sender_id.to_string());
                retry_ids.push(cmid.as_str().to_owned());
            }
        }
    }
    // Two lookups rather than one with OR: each is a plain index scan (an OR across the two
    // would make PostgreSQL read the whole table).
    let mut existing: Vec<StoredRow> = Vec::new();
    if !command_ids.is_empty() {
        existing = sqlx::query_as(
            "SELECT id, conversation_id, seq, sender_id, content, client_message_id, command_id, created_at \
             FROM messages WHERE command_id = ANY($1)",
        )
        .bind(&command_ids)
        .fetch_all(&mut *tx)
        .await?;
    }
    if !retry_ids.is_empty() {
        existing.extend(
            sqlx::query_as::<_, StoredRow>(
                "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.content, m.client_message_id, m.command_id, m.created_at \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS r(conversation_id, sender_id, client_message_id) \
                 JOIN messages m ON m.conversation_id = r.conversation_id AND m.sender_id = r.sender_id \
                  AND m.client_message_id = r.client_message_id",
            )
            .bind(&retry_conversations)
            .bind(&retry_senders)
            .bind(&retry_ids)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    let mut by_command: HashMap<Uuid, MessageNew> = HashMap::new();
    // A retry key: the same sender's same clientMessageId in the same conversation.
    type RetryKey = (Uuid, String, String);
    let mut by_client_id: HashMap<RetryKey, MessageNew> = HashMap::new();
    for row in existing {
        let command_id = row.command_id;
        let key = row.client_message_id.clone().map(|c| (row.conversation_id, row.sender_id.clone(), c));
        let message = row.into_message();
        if let Some(key) = key {
            by_client_id.insert(key, message.clone());
        }
        by_command.insert(command_id, message);
    }

    // Decide each send; new messages get their seq in batch order.
    enum Plan {
        New(usize),
        Done(SendOutcome),
        SameAs(usize),
    }
    let mut plans = Vec::new();
    let mut new_messages: Vec<MessageNew> = Vec::new();
    let mut new_command_ids: Vec<Uuid> = Vec::new();
    let mut in_batch: HashMap<RetryKey, usize> = HashMap::new();
    let mut per_conversation: HashMap<ConversationId, i64> = HashMap::new();
    for command in commands {
        let Command::Send { command, id, delivery } = command else { continue };
        if !member(&command.conversation_id, &command.sender_id) {
            plans.push(Plan::Done(SendOutcome::Refused(AckError::forbidden())));
            continue;
        }
        if let Some(message) = by_command.get(id) {
            plans.push(Plan::Done(SendOutcome::Existing {
                message: message.clone(),
                fan_out: delivery.redelivered,
            }));
            continue;
        }
        let retry_key = command
            .client_message_id
            .as_ref()
            .map(|c| (command.conversation_id.0, command.sender_id.to_string(), c.as_str().to_owned()));
        if let Some(key) = &retry_key {
            if let Some(message) = by_client_id.get(key) {
                plans.push(Plan::Done(SendOutcome::Existing { message: message.clone(), fan_out: false }));
                continue;
            }
            if let Some(index) = in_batch.get(key) {
                plans.push(Plan::SameAs(*index));
                continue;
            }
        }
        let index = new_messages.len();
        if let Some(key) = retry_key {
            in_batch.insert(key, index);
        }
        *per_conversation.entry(command.conversation_id).or_default() += 1;
        new_messages.push(MessageNew {
            id: MessageId::new(),
            conversation_id: command.conversation_id,
            sender_id: command.sender_id.clone(),
            content: command.content.as_str().to_owned(),
            seq: 0,
            created_at: now,
            client_message_id: command.client_message_id.clone(),
        });
        new_command_ids.push(*id);
        plans.push(Plan::New(index));
    }

    if !new_messages.is_empty() {
        // Advance each conversation's last_seq once; the row lock orders concurrent writers.
        let mut ids: Vec<Uuid> = per_conversation.keys().map(|c| c.0).collect();
        ids.sort();
        let counts: Vec<i64> = ids.iter().map(|id| per_conversation[&ConversationId(*id)]).collect();
        let advanced: Vec<(Uuid, i64)> = sqlx::query_as(
            "UPDATE conversations c SET last_seq = c.last_seq + v.n \
             FROM UNNEST($1::uuid[], $2::bigint[]) AS v(id, n) WHERE c.id = v.id RETURNING c.id, c.last_seq",
        )
        .bind(&ids)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?;
        let mut next_seq: HashMap<ConversationId, i64> = advanced
            .into_iter()
            .map(|(id, last)| (ConversationId(id), last - per_conversation[&ConversationId(id)] + 1))
            .collect();
        for message in &mut new_messages {
            let next = next_seq.get_mut(&message.conversation_id).expect("every conversation was advanced");
            message.seq = *next;
            *next += 1;
        }
        let column = |f: fn(&MessageNew) -> String| new_messages.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, content, client_message_id, command_id, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::timestamptz[])",
        )
        .bind(new_messages.iter().map(|m| m.id.0).collect::<Vec<_>>())
        .bind(new_messages.iter().map(|m| m.conversation_id.0).collect::<Vec<_>>())
        .bind(new_messages.iter().map(|m| m.seq).collect::<Vec<_>>())
        .bind(column(|m| m.sender_id.to_string()))
        .bind(column(|m| m.content.clone()))
        .bind(new_messages.iter().map(|m| m.client_message_id.as_ref().map(|c| c.as_str().to_owned())).collect::<Vec<_>>())
        .bind(&new_command_ids)
        .bind(new_messages.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    let sends = plans
        .into_iter()
        .map(|plan| match plan {
            Plan::New(index) => SendOutcome::Stored(new_messages[index].clone()),
            Plan::SameAs(index) => {
                SendOutcome::Existing { message: new_messages[index].clone(), fan_out: false }
            }
            Plan::Done(outcome) => outcome,
        })
        .collect();

    let reads = mark_read(&mut tx, commands, &member, now).await?;
    tx.commit().await?;
    Ok(Decisions { sends, reads, participants })
}

/// Read receipts: each reader's position moves forward only.
async fn mark_read(
    tx: &mut sqlx::PgConnection,
    commands: &[Command<'_>],
    member: &(dyn Fn(&ConversationId, &UserId) -> bool + Sync),
    now: DateTime<Utc>,
) -> Result<Vec<Result<MessageReadEvent, AckError>>, sqlx::Error> {
    let reads: Vec<&MarkRead> = commands
        .iter()
        .filter_map(|c| if let Command::Read { command, .. } = c { Some(command) } else { None })
        .collect();
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = reads.iter().map(|r| r.message_id.0).collect();
    // Messages sent earlier in this same transaction are visible here.
    let found: HashMap<Uuid, (Uuid, i64)> = sqlx::query_as::<_, (Uuid, Uuid, i64)>(
        "SELECT id, conversation_id, seq FROM messages WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(id, conversation, seq)| (id, (conversation, seq)))
    .collect();
    let mut results = Vec::new();
    let mut furthest: HashMap<(Uuid, String), (Uuid, i64)> = HashMap::new();
    for read in &reads {
        if !member(&read.conversation_id, &read.user_id) {
            results.push(Err(AckError::forbidden()));
            continue;
        }
        match found.get(&read.message_id.0) {
            Some((conversation, seq)) if *conversation == read.conversation_id.0 => {
                let entry = furthest
                    .entry((*conversation, read.user_id.to_string()))
                    .or_insert((read.message_id.0, *seq));
                if *seq > entry.1 {
                    *entry = (read.message_id.0, *seq);
                }
                results.push(Ok(MessageReadEvent {
                    conversation_id: read.conversation_id,
                    message_id: read.message_id,
                    user_id: read.user_id.clone(),
                    read_at: now,
                }));
            }
            _ => {
                results.push(Err(AckError::new(ErrorCode::NotFound, "no such message in this conversation")))
            }
        }
    }
    if !furthest.is_empty() {
        let (keys, positions): (Vec<_>, Vec<_>) = furthest.into_iter().unzip();
        sqlx::query(
            "INSERT INTO read_receipts (conversation_id, user_id, message_id, seq, read_at) \
             SELECT v.c, v.u, v.m, v.s, $5 FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bigint[]) AS v(c, u, m, s) \
             ON CONFLICT (conversation_id, user_id) DO UPDATE \
             SET message_id = EXCLUDED.message_id, seq = EXCLUDED.seq, read_at = EXCLUDED.read_at \
             WHERE read_receipts.seq < EXCLUDED.seq",
        )
        .bind(keys.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>())
        .bind(positions.iter().map(|(m, _)| *m).collect::<Vec<_>>())
        .bind(positions.iter().map(|(_, s)| *s).collect::<Vec<_>>())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(results)
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
                replies.push(Reply::Send(&delivery.properties, reply));
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
                replies.push(Reply::Read(&delivery.properties, outcome.map(|_| Empty {})));
            }
        }
    }
    let published = futures::future::join_all(
        fan_out.into_iter().filter(|d| !d.rooms.is_empty()).map(|d| deliver(bus, d, Durability::Confirmed)),
    )
    .await;
    for error in published.into_iter().filter_map(Result::err) {
        // The message is stored; receivers that miss it catch up with messages:sync.
        tracing::warn!(%error, "a fan-out was not confirmed");
    }
    futures::future::join_all(replies.into_iter().map(|reply| async move {
        match reply {
            Reply::Send(props, result) => bus.reply::<SendMessage>(props, result).await,
            Reply::Read(props, result) => bus.reply::<MarkRead>(props, result).await,
        }
    }))
    .await;
}

enum Reply<'a> {
    Send(&'a BasicProperties, Result<MessageSent, AckError>),
    Read(&'a BasicProperties, Result<Empty, AckError>),
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
    command_id: Uuid,
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
