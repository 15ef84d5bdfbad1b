//! The bus topology: the exchanges, and how a queue is declared (docs/reference.md, Processes; each
//! message's route is in [`route`](super::route), each queue in [`queues`](super::queues);
//! the AsyncAPI document in `docs/asyncapi.yaml` describes the same for other languages).
//!
//! Exchanges are declared by every process at every (re)connection: declaring is idempotent,
//! so the first process up creates them and nobody depends on start order. Each process also
//! declares the queues it consumes from, when its consumer (re)starts, so a broker that lost
//! its state (a deleted vhost, a fresh node) is rebuilt by the processes themselves.

use super::route::FixedRoute;
use crate::config::QueueType;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

/// Everything addressed to one user; routing key = user id.
pub const USER_DIRECT: &str = "user.direct";
/// Commands and domain events; routing keys are dotted names, each declared by its message
/// type ([`route`](super::route)).
pub const EVENTS_TOPIC: &str = "events.topic";
/// Presence changes, to every edge.
pub const PRESENCE_FANOUT: &str = "presence.fanout";

/// The exchanges of docs/reference.md, Processes, and where messages that can never be handled are
/// parked ([`dead_letter`](super::dead_letter)).
pub const EXCHANGES: &[(&str, ExchangeKind)] = &[
    (USER_DIRECT, ExchangeKind::Direct),
    (EVENTS_TOPIC, ExchangeKind::Topic),
    (PRESENCE_FANOUT, ExchangeKind::Fanout),
    (super::dead_letter::EXCHANGE, ExchangeKind::Fanout),
];

pub(crate) async fn declare_exchanges(channel: &Channel, queue_type: QueueType) -> lapin::Result<()> {
    for (name, kind) in EXCHANGES {
        channel
            .exchange_declare(
                (*name).into(),
                kind.clone(),
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
    }
    // The notifier's work queues, declared by every process (see `queues::matches`).
    use super::queues;
    for queue in
        [queues::matches(), queues::notifications(), queues::flush_inbox(), queues::delivered_notifications()]
    {
        queue.declare(channel, queue_type).await?;
    }
    super::dead_letter::queue().declare(channel, queue_type).await?;
    Ok(())
}

/// How long a queue lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Survives broker restarts and consumers going away: work that must not be lost.
    Durable,
    /// Belongs to one process (an edge's delivery queue): deleted when that process's
    /// connection closes, so a crashed edge leaves no stale bindings behind.
    Exclusive,
}

/// A queue a consumer reads from, with the bindings that feed it.
#[derive(Clone, Debug)]
pub struct QueueSpec {
    pub name: String,
    pub lifetime: Lifetime,
    /// `(exchange, routing key)` pairs bound at declaration.
    pub bindings: Vec<(String, String)>,
    /// RabbitMQ's single-active-consumer: with several copies consuming, one gets the
    /// deliveries and the others stand by, which keeps the queue's order.
    pub single_active_consumer: bool,
    /// Messages older than this are dropped by the broker (requests nobody waits for any more).
    pub message_ttl_ms: Option<u32>,
    /// The most messages the queue keeps (`x-max-length`); past it the oldest are dropped,
    /// or new ones refused with [`QueueSpec::bounded`].
    pub max_length: Option<u32>,
    /// When full, the broker refuses new messages (`x-overflow: reject-publish`: a confirmed
    /// publish is nacked) instead of dropping the oldest.
    pub reject_when_full: bool,
}

impl QueueSpec {
    pub fn durable(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            lifetime: Lifetime::Durable,
            bindings: Vec::new(),
            single_active_consumer: false,
            message_ttl_ms: None,
            max_length: None,
            reject_when_full: false,
        }
    }

    pub fn exclusive(name: impl Into<String>) -> Self {
        Self { lifetime: Lifetime::Exclusive, ..Self::durable(name) }
    }

    pub fn bind(mut self, exchange: &str, routing_key: impl Into<String>) -> Self {
        let binding = (exchange.to_owned(), routing_key.into());
        if !self.bindings.contains(&binding) {
            self.bindings.push(binding);
        }
        self
    }

    /// Binds the route of the kind `M`: the queue receives every message of that kind (kinds
    /// that share a route, such as a message and its batch, share the binding).
    pub fn carries<M: FixedRoute>(self) -> Self {
        self.bind(M::EXCHANGE, M::KEY)
    }

    pub fn single_active_consumer(mut self) -> Self {
        self.single_active_consumer = true;
        self
    }

    pub fn message_ttl_ms(mut self, ttl: u32) -> Self {
        self.message_ttl_ms = Some(ttl);
        self
    }

    pub fn max_length(mut self, max: u32) -> Self {
        self.max_length = Some(max);
        self
    }

    /// At most `max` messages; past it the broker refuses new ones, so their publishers hear
    /// at once (a nack) instead of queueing work that would expire before its turn.
    pub fn bounded(mut self, max: u32) -> Self {
        self.max_length = Some(max);
        self.reject_when_full = true;
        self
    }

    /// Declares the queue and its bindings; a durable queue is made a quorum queue when
    /// `queue_type` says so (an exclusive one stays classic: quorum queues cannot be).
    pub async fn declare(&self, channel: &Channel, queue_type: QueueType) -> lapin::Result<()> {
        let mut args = FieldTable::default();
        if self.lifetime == Lifetime::Durable && queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        }
        if self.single_active_consumer {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        if let Some(ttl) = self.message_ttl_ms {
            args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
        }
        if let Some(max) = self.max_length {
            args.insert("x-max-length".into(), AMQPValue::LongUInt(max));
        }
        if self.reject_when_full {
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        }
        let options = match self.lifetime {
            Lifetime::Durable => QueueDeclareOptions { durable: true, ..Default::default() },
            Lifetime::Exclusive => {
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }
            }
        };
        channel.queue_declare(self.name.as_str().into(), options, args).await?;
        self.bind_all(channel).await
    }

    /// Uses the queue as it exists (a passive declaration) and binds it: for a durable queue an
    /// earlier version declared with other arguments, which the broker refuses to redeclare.
    pub async fn declare_existing(&self, channel: &Channel) -> lapin::Result<()> {
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        channel.queue_declare(self.name.as_str().into(), options, FieldTable::default()).await?;
        self.bind_all(channel).await
    }

    async fn bind_all(&self, channel: &Channel) -> lapin::Result<()> {
        for (exchange, key) in &self.bindings {
            channel
                .queue_bind(
                    self.name.as_str().into(),
                    ShortString::from(exchange.as_str()),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Whether the broker refused a declaration because the queue exists with other arguments
/// (`PRECONDITION_FAILED`, "inequivalent arg"). It closes the channel.
pub fn is_inequivalent(error: &lapin::Error) -> bool {
    use lapin::{
        ErrorKind,
        protocol::{AMQPErrorKind, AMQPSoftError},
    };
    matches!(error.kind(), ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}
