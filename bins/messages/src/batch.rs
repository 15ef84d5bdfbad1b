//! A batch of chat commands (`message.send`, `message.read`): read once
//! ([`prepare`](crate::handlers::prepare)), stored in one transaction ([`store`]), then fanned
//! out and answered ([`publish`]). See the crate docs for why in that order, and [`store`] for
//! what happens to one bad command in a batch.
//!
//! This is the machinery every command of a batch shares: the command as the batch carries it,
//! the one call of the batch function and what it decided, and the gathering of the fan-out and
//! answers. What is particular to a kind (its columns in that call, how its result is read, and
//! its fan-out and answer) is in the kind's handler module, [`send_message`] and [`mark_read`].

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, SubsecRound, Utc};
use lapin::{message::Delivery, types::AMQPValue};
use serde_json::value::RawValue;
use switchboard::{
    Bus,
    backend::deliver_all,
    bus::{
        BusError, BusMessage, DomainEvents, Durability, Outgoing, Poison, batched::ACK_IN_FAN_OUT,
        rpc::Request,
    },
    contract::{
        AckError, ConversationId, MessageId, Room, UserId,
        bus::{BatchedRequest, Deliver, MarkRead, SendMessage, TraceParent},
        domain::{MessageRead as DomainRead, MessageStored},
        server::{MessageNew, MessageReadEvent},
    },
    db::{Database, is_transient},
    trace,
};
use uuid::Uuid;

use crate::handlers::{
    mark_read,
    send_message::{self, SendOutcome},
};

/// A decoded command: what to do, its id, and where it came from (where its answer goes).
#[derive(Clone)]
pub struct Command {
    /// The idempotency key: the envelope id of a command that came alone, the item id of one
    /// that came in a request batch.
    pub(crate) id: Uuid,
    pub(crate) action: Action,
    /// The delivery that carried it (alone or with others).
    pub(crate) delivery: Arc<Delivery>,
    /// The item's correlation id when it came in a request batch.
    pub(crate) item_correlation: Option<String>,
    /// The queue it was consumed from, for parking.
    pub(crate) queue: Arc<str>,
    /// The trace it belongs to, when traces are exported (see `switchboard::trace`).
    pub(crate) traceparent: Option<TraceParent>,
}

/// A command's kind and body: one variant per kind a batch stores.
#[derive(Clone)]
pub(crate) enum Action {
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
    pub(crate) fn takes_ack_in_fan_out(&self) -> bool {
        self.delivery.properties.headers().as_ref().is_some_and(|headers| {
            matches!(headers.inner().get(ACK_IN_FAN_OUT), Some(AMQPValue::Boolean(true)))
        })
    }

    /// The socket that sent it, which does not get the event it causes.
    pub(crate) fn socket(&self) -> Option<String> {
        match &self.action {
            Action::Send(command) => command.sender_socket.clone(),
            Action::Read(command) => command.reader_socket.clone(),
        }
    }

    /// The answer to this command, for [`Bus::reply_many`].
    pub(crate) fn reply<R: Request>(&self, result: Result<R::Response, AckError>) -> Outgoing<'_> {
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
pub(crate) async fn park_item(
    bus: &Bus,
    queue: &str,
    delivery: &Delivery,
    item: &BatchedRequest,
    poison: &Poison,
) -> Result<(), BusError> {
    let body = serde_json::to_vec(item).unwrap_or_default();
    bus.dead_letter_body(queue, &delivery.properties, &body, poison).await
}

/// What was decided for one command.
pub(crate) enum Decision {
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

/// Stores the commands [`prepare`](crate::handlers::prepare) read, in one transaction. `Err`
/// means the database or the broker is away: the same commands should be stored again later
/// (what was committed before the error is found again by its command ids, so nothing is
/// stored twice).
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
    let mut sends = send_message::Columns::default();
    let mut reads = mark_read::Columns::default();
    for command in commands {
        match &command.action {
            Action::Send(send) => sends.push(command, send, thorough),
            Action::Read(read) => reads.push(read),
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
    .bind(&reads.conversation)
    .bind(&reads.reader)
    .bind(&reads.message)
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
            ("send", Some(outcome)) => send_outcomes.push(send_message::decided(outcome, row)?),
            ("read", outcome) => {
                let read = reads.get(row.index()).ok_or_else(|| malformed("a read out of range"))?;
                read_outcomes.push(mark_read::decided(read, outcome, now));
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
pub(crate) fn malformed(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("switchboard_chat_batch answered {what}"))
}

/// One row of `switchboard_chat_batch`.
#[derive(sqlx::FromRow)]
pub(crate) struct BatchRow {
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

    pub(crate) fn into_message(self) -> Option<MessageNew> {
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
    let mut gathered = FanOut::new(domain, commands, participants);
    for (command, decision) in commands.iter().zip(per_command) {
        match decision {
            None => {}
            Some(Decision::Send(outcome)) => send_message::publish(command, outcome, &mut gathered),
            Some(Decision::Read(outcome)) => mark_read::publish(command, outcome, &mut gathered),
        }
    }
    let FanOut { items: fan_out, mut replies, inside, stored, read, unheard, .. } = gathered;
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

/// What [`publish`] gathers from a batch's decisions, command by command, before anything goes
/// out: each kind's module adds its command's fan-out item, domain event and answer.
pub(crate) struct FanOut<'a> {
    /// The participants of the batch's conversations, whom the fan-out is for.
    participants: HashMap<ConversationId, Vec<UserId>>,
    /// The trace of this fan-out's span, and the command trace that span continues.
    here: Option<TraceParent>,
    continued: Option<&'a TraceParent>,
    /// Built only while some backend listens (see `DomainEvents`).
    stored: Vec<MessageStored>,
    read: Vec<DomainRead>,
    stored_heard: bool,
    read_heard: bool,
    /// The domain events left unbuilt: stored, read.
    unheard: (usize, usize),
    /// The `edge.deliver.batch` items.
    items: Vec<Deliver>,
    /// The answers that go as replies.
    replies: Vec<Outgoing<'a>>,
    /// The answers that travel inside their fan-out item; sent as replies too should the
    /// fan-out fail.
    inside: Vec<Outgoing<'a>>,
}

impl<'a> FanOut<'a> {
    fn new(
        domain: &DomainEvents,
        commands: &'a [Command],
        participants: HashMap<ConversationId, Vec<UserId>>,
    ) -> Self {
        Self {
            participants,
            // Each fanned-out item carries its message's trace on: the one this fan-out's span
            // continues goes on from that span, the others from their own edge's.
            here: trace::current(),
            continued: commands.iter().find_map(Command::traceparent),
            stored: Vec::new(),
            read: Vec::new(),
            stored_heard: domain.heard::<MessageStored>(),
            read_heard: domain.heard::<DomainRead>(),
            unheard: (0, 0),
            items: Vec::new(),
            replies: Vec::new(),
            inside: Vec::new(),
        }
    }

    /// The user rooms of a conversation's participants, leaving out `except`.
    pub(crate) fn rooms(&self, conversation: &ConversationId, except: Option<&UserId>) -> Vec<Room> {
        rooms_of(self.participants.get(conversation), except)
    }

    /// Fans `item` out, carrying on the trace of `command`, which caused it.
    pub(crate) fn deliver(&mut self, command: &Command, mut item: Deliver) {
        item.traceparent = match command.traceparent() {
            Some(parent) if Some(parent) == self.continued && self.here.is_some() => self.here.clone(),
            parent => parent.cloned(),
        };
        self.items.push(item);
    }

    /// An answer sent as a reply.
    pub(crate) fn reply(&mut self, reply: Outgoing<'a>) {
        self.replies.push(reply);
    }

    /// An answer that travels inside its fan-out item (`item.reply`).
    pub(crate) fn reply_inside(&mut self, reply: Outgoing<'a>) {
        self.inside.push(reply);
    }

    /// `domain.message.stored` for `message`, while some backend listens.
    pub(crate) fn stored(&mut self, message: &MessageNew) {
        if self.stored_heard {
            self.stored.push(MessageStored(message.clone()));
        } else {
            self.unheard.0 += 1;
        }
    }

    /// `domain.message.read` for `event`, while some backend listens.
    pub(crate) fn read(&mut self, event: &MessageReadEvent) {
        if self.read_heard {
            self.read.push(DomainRead(event.clone()));
        } else {
            self.unheard.1 += 1;
        }
    }
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
