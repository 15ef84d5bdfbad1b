//! A batch of chat commands (`message.send`, `message.read`): read once ([`prepare`]), stored
//! in one transaction ([`store`]), then fanned out and answered ([`publish`]). See the crate
//! docs for why in that order, and [`store`] for what happens to one bad command in a batch.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, SubsecRound, Utc};
use lapin::{message::Delivery, types::AMQPValue};
use serde_json::value::RawValue;
use switchboard::{
    Bus,
    backend::deliver_all,
    bus::{
        BusError, BusMessage, DomainEvents, Durability, Envelope, Inbound, Outgoing, Poison,
        batched::ACK_IN_FAN_OUT, queues::ShardCommand, rpc::Request,
    },
    contract::{
        AckError, ConversationId, ErrorCode, MessageId, Room, UserId,
        bus::{BatchedRequest, Deliver, MarkRead, SendMessage, TraceParent},
        client::{Empty, MessageSent},
        domain::{MessageRead as DomainRead, MessageStored},
        server::{MessageNew, MessageReadEvent, ServerEvent},
    },
    db::{Database, is_transient},
    trace,
};
use uuid::Uuid;

/// A decoded command: what to do, its id, and where it came from (where its answer goes).
#[derive(Clone)]
pub struct Command {
    /// The idempotency key: the envelope id of a command that came alone, the item id of one
    /// that came in a request batch.
    id: Uuid,
    action: Action,
    /// The delivery that carried it (alone or with others).
    delivery: Arc<Delivery>,
    /// The item's correlation id when it came in a request batch.
    item_correlation: Option<String>,
    /// The queue it was consumed from, for parking.
    queue: Arc<str>,
    /// The trace it belongs to, when traces are exported (see `switchboard::trace`).
    traceparent: Option<TraceParent>,
}

#[derive(Clone)]
enum Action {
    Send(SendMessage),
    Read(MarkRead),
}

impl Command {
    /// The trace it belongs to, for the spans of the batch that carries it.
    pub fn traceparent(&self) -> Option<&TraceParent> {
        self.traceparent.as_ref()
    }

    fn expires_at(&self) -> DateTime<Utc> {
        match &self.action {
            Action::Send(command) => command.expires_at,
            Action::Read(command) => command.expires_at,
        }
    }

    /// Whether the requester takes the answer inside the fan-out (an edge of this version).
    fn takes_ack_in_fan_out(&self) -> bool {
        self.delivery.properties.headers().as_ref().is_some_and(|headers| {
            matches!(headers.inner().get(ACK_IN_FAN_OUT), Some(AMQPValue::Boolean(true)))
        })
    }

    /// The socket that sent it, which does not get the event it causes.
    fn socket(&self) -> Option<String> {
        match &self.action {
            Action::Send(command) => command.sender_socket.clone(),
            Action::Read(command) => command.reader_socket.clone(),
        }
    }

    /// The answer to this command, for [`Bus::reply_many`].
    fn reply<R: Request>(&self, result: Result<R::Response, AckError>) -> Outgoing<'_> {
        let properties = &self.delivery.properties;
        match &self.item_correlation {
            Some(correlation) => Outgoing::item::<R>(properties, correlation, result),
            None => Outgoing::new::<R>(properties, result),
        }
    }

    /// Parks this command (alone: not the rest of its batch) in the dead-letter queue.
    async fn park(&self, bus: &Bus, poison: &Poison) -> Result<(), BusError> {
        let Some(correlation) = &self.item_correlation else {
            return bus.dead_letter(&self.queue, &self.delivery, poison).await;
        };
        let (kind, data) = match &self.action {
            Action::Send(command) => (SendMessage::KIND, serde_json::value::to_raw_value(command)),
            Action::Read(command) => (MarkRead::KIND, serde_json::value::to_raw_value(command)),
        };
        // Our own types always serialize.
        let data = data.unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"));
        let item = BatchedRequest {
            id: self.id,
            correlation_id: correlation.clone(),
            kind: kind.to_owned(),
            data,
            traceparent: self.traceparent.clone(),
        };
        park_item(bus, &self.queue, &self.delivery, &item, poison).await
    }
}

/// Parks one item of a request batch by itself: the item is the parked body, with the
/// properties of the delivery that carried it.
async fn park_item(
    bus: &Bus,
    queue: &str,
    delivery: &Delivery,
    item: &BatchedRequest,
    poison: &Poison,
) -> Result<(), BusError> {
    let body = serde_json::to_vec(item).unwrap_or_default();
    bus.dead_letter_body(queue, &delivery.properties, &body, poison).await
}

/// What the transaction decided for one send.
enum SendOutcome {
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

/// What was decided for one command.
enum Decision {
    Send(SendOutcome),
    Read(Result<MessageReadEvent, AckError>),
}

impl Decision {
    /// The database will not store this command's data.
    fn refused(command: &Command) -> Self {
        let refusal = AckError::invalid("the message could not be stored");
        match command.action {
            Action::Send(_) => Decision::Send(SendOutcome::Refused(refusal)),
            Action::Read(_) => Decision::Read(Err(refusal)),
        }
    }
}

/// What [`store`] decided for a batch: one entry per command, in order (`None` for a command
/// that expired before it could be stored: it gets no answer), and the participants of the
/// batch's conversations, whom the fan-out is for.
pub struct Decided {
    per_command: Vec<Option<Decision>>,
    participants: HashMap<ConversationId, Vec<UserId>>,
}

/// Why a batch must be tried again: nothing of it was answered or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the database is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Reads the deliveries of the shard queue `queue`, once: the commands to store, in order. A
/// delivery is one command, or a [`RequestBatch`] of them. What cannot be read (or is of a
/// kind this queue does not carry) is parked in the dead-letter queue and, when it can be
/// answered, answered `invalid`, so it is out of the way before any transaction. `Err` only
/// when the broker could not take a parked copy: the caller retries.
pub async fn prepare(
    bus: &Bus,
    queue: &Arc<str>,
    deliveries: &[Arc<Delivery>],
) -> Result<Vec<Command>, BusError> {
    let mut commands = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let command = |id, action| Command {
            id,
            action,
            delivery: delivery.clone(),
            item_correlation: None,
            queue: queue.clone(),
            traceparent: trace::from_header(&delivery.properties),
        };
        match Envelope::<ShardCommand>::decode_inbound(&delivery.data) {
            Ok(Envelope { id, data: ShardCommand::SendMessage(send), .. }) => {
                commands.push(command(id, Action::Send(send)))
            }
            Ok(Envelope { id, data: ShardCommand::MarkRead(read), .. }) => {
                commands.push(command(id, Action::Read(read)))
            }
            Ok(Envelope { data: ShardCommand::RequestBatch(batch), .. }) => {
                for item in batch.requests {
                    unpack(bus, queue, delivery, item, &mut commands).await?;
                }
            }
            Err(error) => {
                bus.dead_letter(queue, delivery, &error.into()).await?;
                // A command of a kind this queue answers can be told; a batch that cannot be
                // read cannot (its requesters time out), nor can a kind of another queue.
                let refusal = AckError::invalid("the command could not be read");
                match switchboard::bus::kind_of(delivery).as_deref() {
                    Some(SendMessage::KIND) => {
                        bus.reply::<SendMessage>(&delivery.properties, Err(refusal)).await
                    }
                    Some(MarkRead::KIND) => bus.reply::<MarkRead>(&delivery.properties, Err(refusal)).await,
                    _ => {}
                }
            }
        }
    }
    Ok(commands)
}

/// One item of a request batch: a command for `commands`, or parked (and answered `invalid`
/// when its kind is one this queue answers).
async fn unpack(
    bus: &Bus,
    queue: &Arc<str>,
    delivery: &Arc<Delivery>,
    item: BatchedRequest,
    commands: &mut Vec<Command>,
) -> Result<(), BusError> {
    let action = match ShardCommand::decode_body(&item.kind, item.data.get().as_bytes()) {
        Some(Ok(ShardCommand::SendMessage(send))) => Ok(Action::Send(send)),
        Some(Ok(ShardCommand::MarkRead(read))) => Ok(Action::Read(read)),
        Some(Ok(ShardCommand::RequestBatch(_))) => {
            return park_item(bus, queue, delivery, &item, &Poison::refused("a batch inside a batch")).await;
        }
        Some(Err(error)) => Err(error),
        None => return park_item(bus, queue, delivery, &item, &Poison::unknown_kind(Some(&item.kind))).await,
    };
    match action {
        Ok(action) => commands.push(Command {
            id: item.id,
            action,
            delivery: delivery.clone(),
            item_correlation: Some(item.correlation_id),
            queue: queue.clone(),
            traceparent: item.traceparent,
        }),
        Err(error) => {
            park_item(bus, queue, delivery, &item, &Poison::malformed(error)).await?;
            let refusal = AckError::invalid("the command could not be read");
            let (request, correlation) = (&delivery.properties, item.correlation_id.as_str());
            bus.reply_many(vec![match item.kind.as_str() {
                SendMessage::KIND => Outgoing::item::<SendMessage>(request, correlation, Err(refusal)),
                _ => Outgoing::item::<MarkRead>(request, correlation, Err(refusal)),
            }])
            .await;
        }
    }
    Ok(())
}

/// Stores the commands [`prepare`] read, in one transaction. `Err` means the database or the
/// broker is away: the same commands should be stored again later (what was committed before
/// the error is found again by its command ids, so nothing is stored twice).
///
/// A command past its expiry is left out and never answered. A batch the database refuses for
/// a reason that is not transient is stored again one command at a time: the command the
/// database refuses is answered `invalid` and parked in the dead-letter queue, and every other
/// one is stored as usual.
pub async fn store(bus: &Bus, database: &Database, commands: &[Command]) -> Result<Decided, BatchError> {
    // PostgreSQL keeps microseconds: the ack and the stored row must show the same instant.
    let now = Utc::now().trunc_subsecs(6);
    let mut decided =
        Decided { per_command: commands.iter().map(|_| None).collect(), participants: HashMap::new() };
    // Past its expiry the sender was told `timeout`: it must not happen now.
    let live: Vec<usize> = (0..commands.len()).filter(|&i| commands[i].expires_at() > now).collect();
    metrics::counter!("messages_expired_total").increment((commands.len() - live.len()) as u64);
    if live.is_empty() {
        return Ok(decided);
    }
    let started = std::time::Instant::now();
    let chosen: Vec<&Command> = live.iter().map(|&i| &commands[i]).collect();
    let error = match store_once(database, &chosen, now).await {
        Ok((decisions, participants)) => {
            metrics::histogram!("messages_batch_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("messages_batch_size").record(chosen.len() as f64);
            decided.participants = participants;
            for (index, decision) in live.into_iter().zip(decisions) {
                decided.per_command[index] = Some(decision);
            }
            return Ok(decided);
        }
        Err(error) => error,
    };
    if is_transient(&error) {
        return Err(error.into());
    }
    if chosen.len() > 1 {
        tracing::warn!(%error, commands = chosen.len(), "the database refused a batch; storing its commands one by one");
    }
    for index in live {
        let one = [&commands[index]];
        let error = if chosen.len() == 1 {
            error.to_string()
        } else {
            match store_once(database, &one, now).await {
                Ok((mut decisions, participants)) => {
                    decided.participants.extend(participants);
                    decided.per_command[index] = decisions.pop();
                    continue;
                }
                Err(error) if is_transient(&error) => return Err(error.into()),
                Err(error) => error.to_string(),
            }
        };
        // Refused for good: answered `invalid` and parked for an operator to look at.
        commands[index].park(bus, &Poison::refused(error)).await?;
        metrics::counter!("messages_refused_total").increment(1);
        decided.per_command[index] = Some(Decision::refused(&commands[index]));
    }
    Ok(decided)
}

/// [`store_batch`], and a second, thorough pass after a unique violation: another writer
/// stored one of these commands meanwhile (possible only while shard ownership moves), and the
/// second pass finds those rows.
async fn store_once(
    database: &Database,
    commands: &[&Command],
    now: DateTime<Utc>,
) -> Result<(Vec<Decision>, HashMap<ConversationId, Vec<UserId>>), sqlx::Error> {
    match store_batch(database, commands, now, false).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            store_batch(database, commands, now, true).await
        }
        other => other,
    }
}

/// Stores a batch with one call of `switchboard_chat_batch` (migrations/, where the rules are
/// written out): one round trip and one transaction. With `thorough`, every send is also
/// looked up by its command id, not only broker redeliveries. Answers one decision per command.
async fn store_batch(
    database: &Database,
    commands: &[&Command],
    now: DateTime<Utc>,
    thorough: bool,
) -> Result<(Vec<Decision>, HashMap<ConversationId, Vec<UserId>>), sqlx::Error> {
    let mut sends = SendColumns::default();
    let (mut read_conversations, mut readers, mut read_messages) = (Vec::new(), Vec::new(), Vec::new());
    let mut reads: Vec<&MarkRead> = Vec::new();
    for command in commands {
        match &command.action {
            Action::Send(send) => {
                sends.conversation.push(send.conversation_id.0);
                sends.sender.push(send.sender_id.to_string());
                sends.content.push(send.content.as_str().to_owned());
                sends.client_id.push(send.client_message_id.as_ref().map(|c| c.as_str().to_owned()));
                sends.command.push(command.id);
                // A command delivered for the first time cannot have been stored before.
                let redelivered = command.delivery.redelivered;
                sends.look_up_command.push(redelivered || thorough);
                sends.message.push(MessageId::new().0);
            }
            Action::Read(read) => {
                read_conversations.push(read.conversation_id.0);
                readers.push(read.user_id.to_string());
                read_messages.push(read.message_id.0);
                reads.push(read);
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

    let mut send_outcomes = Vec::with_capacity(sends.conversation.len());
    let mut read_outcomes = Vec::with_capacity(reads.len());
    let mut participants = HashMap::new();
    // The function answers sends, then reads, each in batch order, then the participants.
    for mut row in rows {
        let (part, outcome) = (std::mem::take(&mut row.part), row.outcome.take());
        match (part.as_str(), outcome.as_deref()) {
            ("send", Some("forbidden")) => send_outcomes.push(SendOutcome::Refused(AckError::forbidden())),
            ("send", Some(outcome)) => {
                let message = row.into_message().ok_or_else(|| malformed("a send without its message"))?;
                send_outcomes.push(match outcome {
                    "stored" => SendOutcome::Stored(message),
                    // This very command (its id) was stored before: by a delivery that died before
                    // its fan-out (a broker redelivery), or by this worker's own earlier attempt
                    // whose commit went through but whose answer was lost (a database failover),
                    // after which nothing was fanned out. Either way its recipients may never
                    // have had it, so it is fanned out again: at least once, and a client that
                    // sees a seq twice drops the second.
                    "redelivered" => SendOutcome::Existing { message, fan_out: true },
                    _ => SendOutcome::Existing { message, fan_out: false },
                });
            }
            ("read", outcome) => {
                let read = reads.get(row.index()).ok_or_else(|| malformed("a read out of range"))?;
                read_outcomes.push(match outcome {
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
                    participants.insert(ConversationId(conversation), users);
                }
            }
            _ => return Err(malformed("an unknown part")),
        }
    }
    if send_outcomes.len() != sends.conversation.len() || read_outcomes.len() != reads.len() {
        return Err(malformed("not one answer per command"));
    }
    let (mut send_outcomes, mut read_outcomes) = (send_outcomes.into_iter(), read_outcomes.into_iter());
    let decisions = commands
        .iter()
        .filter_map(|command| match command.action {
            Action::Send(_) => send_outcomes.next().map(Decision::Send),
            Action::Read(_) => read_outcomes.next().map(Decision::Read),
        })
        .collect();
    Ok((decisions, participants))
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

/// After commit: fan-out (confirmed, all at once), then each sender's answer.
///
/// The answer to a send that an edge's socket made (`senderSocket`), whose request says the
/// edge takes it so (the `ACK_IN_FAN_OUT` header), and that is fanned out travels inside its
/// fan-out item: the sender's user room is one of the item's rooms, so the
/// sending edge receives it anyway, and one broker message per chat message is saved. Every
/// other answer (refusals, a retry of a stored message, reads, requests from elsewhere) goes as
/// a reply. Should a fan-out publish fail, every answer is also sent as a reply: an edge that
/// already took one from the fan-out ignores the second.
pub async fn publish(bus: &Bus, domain: &DomainEvents, commands: &[Command], decided: Decided) {
    let Decided { per_command, participants } = decided;
    // Each fanned-out item carries its message's trace on: the one this fan-out's span
    // continues goes on from that span, the others from their own edge's.
    let (here, continued) = (trace::current(), commands.iter().find_map(Command::traceparent));
    let trace_of = |command: &Command| match command.traceparent() {
        Some(parent) if Some(parent) == continued && here.is_some() => here.clone(),
        parent => parent.cloned(),
    };
    // Built only while some backend listens (see `DomainEvents`).
    let (mut stored, mut read) = (Vec::new(), Vec::new());
    let (stored_heard, read_heard) = (domain.heard::<MessageStored>(), domain.heard::<DomainRead>());
    let mut unheard = (0, 0);
    let mut fan_out = Vec::new();
    let mut replies = Vec::new();
    let mut inside = Vec::new();
    for (command, decision) in commands.iter().zip(per_command) {
        match decision {
            None => {}
            Some(Decision::Send(outcome)) => {
                let (reply, message) = match outcome {
                    SendOutcome::Stored(message) => (Ok(sent(&message)), Some(message)),
                    SendOutcome::Existing { message, fan_out } => {
                        (Ok(sent(&message)), fan_out.then_some(message))
                    }
                    SendOutcome::Refused(error) => (Err(error), None),
                };
                let reply = command.reply::<SendMessage>(reply);
                let Some(message) = message else {
                    replies.push(reply);
                    continue;
                };
                let rooms = rooms_of(participants.get(&message.conversation_id), None);
                let mut item = Deliver::server_event(rooms, MessageNew::NAME, &message, command.socket());
                if stored_heard {
                    stored.push(MessageStored(message.clone()));
                } else {
                    unheard.0 += 1;
                }
                item.traceparent = trace_of(command);
                if command.takes_ack_in_fan_out()
                    && item.except_socket.is_some()
                    && item.rooms.contains(&Room::User(message.sender_id.clone()))
                {
                    item.reply = reply.batched();
                }
                match item.reply {
                    Some(_) => inside.push(reply),
                    None => replies.push(reply),
                }
                fan_out.push(item);
                metrics::counter!("messages_stored_total").increment(1);
            }
            Some(Decision::Read(outcome)) => {
                if let Ok(event) = &outcome {
                    if read_heard {
                        read.push(DomainRead(event.clone()));
                    } else {
                        unheard.1 += 1;
                    }
                    let rooms = rooms_of(participants.get(&event.conversation_id), Some(&event.user_id));
                    let mut item =
                        Deliver::server_event(rooms, MessageReadEvent::NAME, event, command.socket());
                    item.traceparent = trace_of(command);
                    fan_out.push(item);
                }
                replies.push(command.reply::<MarkRead>(outcome.map(|_| Empty {})));
            }
        }
    }
    domain.unheard::<MessageStored>(unheard.0);
    domain.unheard::<DomainRead>(unheard.1);
    // As few broker messages as the batch allows: one per edge for the whole batch. The domain
    // events go at the same time, and before the shard acknowledges the batch: a redelivery
    // repeats them.
    let (failed, (), ()) = futures::join!(
        deliver_all(bus, fan_out, Durability::Confirmed),
        domain.publish(&stored),
        domain.publish(&read)
    );
    for error in &failed {
        // The message is stored; receivers that miss it catch up with messages:sync.
        tracing::warn!(%error, "a fan-out was not confirmed");
    }
    if !failed.is_empty() {
        replies.extend(inside);
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
