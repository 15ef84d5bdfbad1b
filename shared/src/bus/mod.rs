//! The bus: RabbitMQ through a pool of lapin connections (deadpool, with the manager of
//! [`connect`]: plain AMQP, or TLS with `RABBITMQ_TLS`).
//!
//! What every process gets from [`Bus`]:
//! - a **supervisor** task that keeps one connection open, declares the exchanges on every
//!   (re)connection and publishes readiness (`/readyz` is 503 while it is down). Reconnection
//!   backs off exponentially with jitter (100 ms up to 1 s), never spins, and stops at shutdown.
//!   A failure retrying alone will not fix (the broker's TLS certificate refused) is an ERROR
//!   saying why, once and then every 30 s while it lasts, not a warning per attempt;
//! - [`Bus::publish`]: each message to the route its type declares ([`route`]), with persistent delivery with publisher confirms where durability matters,
//!   transient and unconfirmed where it does not (typing);
//! - [`Bus::consume`] (in [`consume`]): manual acks, bounded prefetch, queue declared on every
//!   start so a broker that lost its state is rebuilt, and a restart with backoff when the
//!   channel dies;
//! - [`Bus::request`] and [`Bus::serve`] (in [`rpc`]): request/reply with `reply_to` and
//!   `correlation_id` over RabbitMQ's direct reply-to;
//! - [`Bus::request_batcher`] (in [`batched`]): requests to one route sent as batches, one
//!   message in flight at a time, for the edge's chat commands;
//! - [`Bus::dead_letter`] (in [`dead_letter`]): a message that can never be handled is parked
//!   in the `dead.letters` queue instead of blocking its queue or vanishing.
//!
//! What travels is typed end to end: each message type declares its kind, its route and its
//! response once (`kinds!` in [`contract::bus`](crate::contract::bus), with [`route`]), so no
//! caller writes an exchange or a routing key; each queue is declared once in [`queues`], bound
//! by the routes of the kinds it carries, and a queue of several kinds decodes into its enum
//! ([`Inbound`]).
//!
//! Channels are made from pooled connections; lapin multiplexes them over one socket. A pooled
//! connection that died is dropped by the pool on its next checkout.

pub mod batched;
pub mod connect;
pub mod consume;
pub mod dead_letter;
pub mod domain;
pub mod envelope;
pub mod queues;
pub mod route;
pub mod rpc;
pub mod topology;

use std::{sync::Arc, time::Duration};

use backon::BackoffBuilder;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::AMQPValue,
};
use tokio::sync::{Mutex, watch};

pub use batched::{QueuedRequest, RequestBatcher};
pub use connect::ConnectError;
pub use consume::{ConsumeOptions, Incoming, Outcome, kind_of, retry_in_place};
pub use dead_letter::Poison;
pub use domain::DomainEvents;
pub use envelope::{BusMessage, DecodeError, Envelope};
pub use queues::Inbound;
pub use route::{FixedRoute, Route, Routed, Shard};
pub use rpc::{Outgoing, PendingReply, Request, RequestError};
pub use topology::QueueSpec;

use crate::{
    config::{Config, QueueType},
    shutdown::Shutdown,
    telemetry::Throttle,
};

/// The longest any one call to the broker may take (opening a channel, a declaration, a
/// publish and its confirm, a consume). A connection can die without lapin noticing at once,
/// and a broker that is still starting can take a connection and not answer on it; a call
/// waiting on such a connection would wait for ever and hold up everything behind it (the
/// publisher's lock, a consumer's restart). Past this it fails as `Unavailable`, and the
/// caller's retry gets a fresh channel.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one call to the broker within [`BROKER_CALL_TIMEOUT`].
pub async fn in_time<T, E: Into<BusError>>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(BROKER_CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(BusError::Timeout(what)),
    }
}

/// Whether a publish must survive a broker restart and be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Persistent delivery, and [`Bus::publish`] returns only once the broker confirmed it.
    Confirmed,
    /// Sent and forgotten: losing it in a broker failure is acceptable (typing indicators).
    Transient,
}

/// Why a call to the broker failed. Each is worth a retry later (the broker or the connection
/// comes back) except [`BusError::Nacked`], which the caller decides about. The client's own
/// error is kept whole, for callers that look into it, and its words are in this one's (logs
/// print errors by `Display`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum BusError {
    /// lapin failed the call: the connection or the channel is gone, or the broker closed it.
    #[error("the broker is unavailable: {0}")]
    Broker(Arc<lapin::Error>),
    /// The pool had no connection to give (the broker unreachable, or its TLS refused).
    #[error("no connection to the broker: {0}")]
    Connect(Arc<deadpool::managed::PoolError<ConnectError>>),
    /// The broker did not answer a call within [`BROKER_CALL_TIMEOUT`]; names the call.
    #[error("the broker did not answer in time ({0})")]
    Timeout(&'static str),
    /// The bus cannot do it now for a reason of its own, in words (a consumer the broker
    /// cancelled, a route nothing serves).
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    #[error("the broker refused the message")]
    Nacked,
}

impl BusError {
    /// Why TLS refused the connection ([`ConnectError::Trust`]), when it did: said as an ERROR
    /// now and then, where any other failure to connect is a warning per attempt.
    pub fn trust_refusal(&self) -> Option<&str> {
        match self {
            BusError::Connect(error) => match error.as_ref() {
                deadpool::managed::PoolError::Backend(ConnectError::Trust(reason)) => Some(reason),
                _ => None,
            },
            _ => None,
        }
    }
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Broker(Arc::new(e))
    }
}

impl From<deadpool::managed::PoolError<ConnectError>> for BusError {
    fn from(e: deadpool::managed::PoolError<ConnectError>) -> Self {
        BusError::Connect(Arc::new(e))
    }
}

/// A handle to the bus; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    pool: connect::Pool,
    ready: watch::Sender<bool>,
    /// The confirm-mode channel publishes share; replaced when it dies.
    publisher: Mutex<Option<Channel>>,
    replies: rpc::Replies,
    prefetch: u16,
    queue_type: QueueType,
    shutdown: Shutdown,
}

impl Bus {
    /// Creates the pool and starts the supervisor. Returns at once: the connection is made in
    /// the background, and [`Bus::is_ready`] tells when it is up.
    pub fn start(config: &Config, name: &str, shutdown: &Shutdown) -> Bus {
        let manager = connect::Manager::new(config, format!("{name} pid {}", std::process::id()));
        let pool = connect::Pool::builder(manager)
            .max_size(4)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            // Only fails for timeouts without a runtime, and the runtime is given.
            .expect("a tokio pool can always be built");
        let (ready, _) = watch::channel(false);
        let bus = Bus {
            inner: Arc::new(Inner {
                pool,
                ready,
                publisher: Mutex::new(None),
                replies: rpc::Replies::default(),
                prefetch: config.rabbitmq_prefetch,
                queue_type: config.rabbitmq_queue_type,
                shutdown: shutdown.clone(),
            }),
        };
        tokio::spawn(bus.clone().supervise());
        bus
    }

    /// Whether the supervisor's connection is up and the exchanges are declared.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until the bus is ready; returns false if shutdown came first.
    pub async fn wait_ready(&self) -> bool {
        let mut ready = self.inner.ready.subscribe();
        tokio::select! {
            result = ready.wait_for(|r| *r) => result.is_ok(),
            _ = self.inner.shutdown.triggered() => false,
        }
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// Declares a queue and its bindings with this installation's queue type
    /// (`RABBITMQ_QUEUE_TYPE`).
    pub async fn declare(&self, channel: &Channel, queue: &QueueSpec) -> Result<(), BusError> {
        in_time("declaring a queue", queue.declare(channel, self.inner.queue_type)).await
    }

    /// A fresh channel on a pooled connection.
    pub async fn channel(&self) -> Result<Channel, BusError> {
        let connection = self.inner.pool.get().await?;
        match in_time("opening a channel", connection.create_channel()).await {
            Ok(channel) => Ok(channel),
            Err(error) => {
                // A connection that cannot open a channel in time is of no use to anyone, yet
                // says it is connected, so the pool would hand it out again: it leaves the pool
                // (and is closed in the background), and the next call makes a fresh one.
                let stale = deadpool::managed::Object::take(connection);
                tokio::spawn(async move {
                    in_time("closing a connection", stale.close(320, "unresponsive".into())).await
                });
                Err(error)
            }
        }
    }

    /// Publishes `message` to its route ([`Routed`]). With [`Durability::Confirmed`] this
    /// returns only after the broker took responsibility for it; an error means the outcome is
    /// unknown and the caller decides whether to retry (every consumer of confirmed messages is
    /// idempotent).
    pub async fn publish<M: Routed>(&self, message: &M, durability: Durability) -> Result<(), BusError> {
        self.publish_with(message, durability, false).await.map(drop)
    }

    /// Publishes persistently and confirmed, as mandatory: returns whether any queue took the
    /// message. For `user.direct`, `false` means none of the users had a socket on any edge at
    /// that moment (the notifier keeps such a notification for their next connect).
    pub async fn publish_routed<M: Routed>(&self, message: &M) -> Result<bool, BusError> {
        self.publish_with(message, Durability::Confirmed, true).await
    }

    async fn publish_with<M: Routed>(
        &self,
        message: &M,
        durability: Durability,
        mandatory: bool,
    ) -> Result<bool, BusError> {
        let Route { exchange, key, also } = message.route();
        let envelope = Envelope::wrap(M::KIND, message);
        let mut properties = properties::<M>(&envelope);
        if !also.is_empty() {
            let keys = also.into_iter().map(|k| AMQPValue::LongString(k.into())).collect::<Vec<_>>();
            let mut headers = properties.headers().clone().unwrap_or_default();
            headers.insert("CC".into(), AMQPValue::FieldArray(keys.into()));
            properties = properties.with_headers(headers);
        }
        self.publish_bytes(exchange, &key, &envelope.encode(), properties, durability, mandatory).await
    }

    /// Publishes one body; `Ok(false)` when a mandatory message was returned unroutable.
    pub(crate) async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        durability: Durability,
        mandatory: bool,
    ) -> Result<bool, BusError> {
        let properties = match durability {
            Durability::Confirmed => properties.with_delivery_mode(2),
            Durability::Transient => properties.with_delivery_mode(1),
        };
        // One retry covers the common case of a cached channel that died with an old
        // connection: the first attempt fails before anything was sent.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let channel = self.publisher().await?;
            let sent = in_time(
                "publishing",
                channel.basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions { mandatory, ..Default::default() },
                    body,
                    properties.clone(),
                ),
            )
            .await;
            let confirm = match sent {
                Ok(confirm) => confirm,
                Err(error) => {
                    self.forget_publisher(&channel).await;
                    if attempt < 2 {
                        continue;
                    }
                    metrics::counter!("bus_publish_errors_total", "exchange" => exchange.to_owned())
                        .increment(1);
                    return Err(error);
                }
            };
            metrics::counter!("bus_published_total", "exchange" => exchange.to_owned()).increment(1);
            if durability == Durability::Transient {
                return Ok(true);
            }
            return match in_time("waiting for a confirm", confirm).await {
                Ok(Confirmation::Ack(None)) => Ok(true),
                Ok(Confirmation::Ack(Some(returned))) => {
                    // Mandatory and routed nowhere: the caller decides (a notification waits
                    // for the user's next connect). Worth a count, not a warning.
                    tracing::debug!(exchange, routing_key, kind = ?returned.properties.kind(), "the broker returned a message no queue took");
                    metrics::counter!("bus_returned_total", "exchange" => exchange.to_owned()).increment(1);
                    Ok(false)
                }
                Ok(Confirmation::NotRequested) => Ok(true),
                Ok(Confirmation::Nack(_)) => Err(BusError::Nacked),
                Err(error) => {
                    self.forget_publisher(&channel).await;
                    Err(error)
                }
            };
        }
    }

    async fn publisher(&self) -> Result<Channel, BusError> {
        let mut slot = self.inner.publisher.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        in_time("confirm mode", channel.confirm_select(ConfirmSelectOptions::default())).await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    async fn forget_publisher(&self, dead: &Channel) {
        let mut slot = self.inner.publisher.lock().await;
        if slot.as_ref().is_some_and(|c| c.id() == dead.id()) {
            *slot = None;
        }
    }

    /// Keeps a connection open, declares the exchanges, and publishes readiness.
    async fn supervise(self) {
        let shutdown = self.inner.shutdown.clone();
        let mut delays = backoff();
        let mut refusals = Throttle::new(TRUST_REMINDER);
        loop {
            // Bounded as a whole: a broker that takes the connection but does not answer on it
            // (still starting) is tried again, not waited for.
            let attempt = tokio::time::timeout(BROKER_CALL_TIMEOUT * 2, self.connect_and_declare());
            let connected = attempt.await.unwrap_or(Err(BusError::Timeout("connecting")));
            match connected {
                Ok(events) => {
                    delays = backoff();
                    refusals = Throttle::new(TRUST_REMINDER);
                    tracing::info!("connected to the broker");
                    self.inner.ready.send_replace(true);
                    let lost = tokio::select! {
                        reason = wait_until_lost(events) => Some(reason),
                        _ = shutdown.triggered() => None,
                    };
                    self.inner.ready.send_replace(false);
                    match lost {
                        Some(reason) => tracing::warn!(%reason, "lost the broker connection; reconnecting"),
                        None => return,
                    }
                }
                Err(error) => match error.trust_refusal() {
                    // The certificate or the CA may be fixed without a restart (the CA file is
                    // read again at every attempt): keep trying, and say what is wrong once,
                    // then as a reminder now and then.
                    Some(reason) => {
                        if refusals.ready() {
                            tracing::error!(%reason, "refused the broker's TLS connection; retrying");
                        }
                    }
                    None => tracing::warn!(%error, "cannot reach the broker; retrying"),
                },
            }
            let delay = delays.next().unwrap_or(MAX_RECONNECT_DELAY);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.triggered() => return,
            }
        }
    }

    async fn connect_and_declare(
        &self,
    ) -> Result<std::pin::Pin<Box<dyn futures::Stream<Item = lapin::Event> + Send>>, BusError> {
        let connection = self.inner.pool.get().await?;
        let events: std::pin::Pin<Box<dyn futures::Stream<Item = lapin::Event> + Send>> =
            Box::pin(connection.events_listener());
        let declared = async {
            let channel = connection.create_channel().await?;
            topology::declare_exchanges(&channel, self.inner.queue_type).await?;
            Ok::<_, lapin::Error>(channel)
        };
        let channel = match in_time("declaring the exchanges", declared).await {
            Ok(channel) => channel,
            Err(error) => {
                // As in `channel`: an unresponsive connection leaves the pool.
                let stale = deadpool::managed::Object::take(connection);
                tokio::spawn(async move {
                    in_time("closing a connection", stale.close(320, "unresponsive".into())).await
                });
                return Err(error);
            }
        };
        // Closing the channel is tidy but not needed: a failure here changes nothing.
        let _ = in_time("closing a channel", channel.close(200, "declared".into())).await;
        Ok(events)
    }

    /// Closes the pool's connections; consumers' unacknowledged deliveries return to their
    /// queues. Call last in the shutdown path.
    pub async fn close(&self) {
        self.inner.pool.close();
        if let Some(channel) = self.inner.publisher.lock().await.take() {
            let _ = in_time("closing a channel", channel.close(200, "shutdown".into())).await;
        }
        self.inner.ready.send_replace(false);
    }
}

/// How often a TLS refusal that goes on is reported again.
const TRUST_REMINDER: Duration = Duration::from_secs(30);

/// Waits for the connection's first error (or the end of its events), and says why.
async fn wait_until_lost(mut events: impl futures::Stream<Item = lapin::Event> + Unpin) -> String {
    while let Some(event) = events.next().await {
        if let lapin::Event::Error(error) = event {
            return error.to_string();
        }
    }
    "the connection closed".to_owned()
}

/// The longest pause between two reconnection attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Delays between reconnection attempts: 100 ms doubling to 1 s, with jitter so that many
/// processes do not reconnect in step. At most a second, so that the bus is back within a
/// second of the broker (issue 16: sends acked again within 2 s of its return); one attempt a
/// second per process costs a broker that is down nothing.
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_RECONNECT_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The properties of a message of its own: its kind, id and time, and the current span's trace
/// (when traces are exported) in the `traceparent` header.
pub(crate) fn properties<M: BusMessage>(envelope: &Envelope<&M>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(M::KIND.into())
        .with_message_id(envelope.id.to_string().into())
        .with_timestamp(u64::try_from(envelope.sent_at.timestamp()).unwrap_or_default());
    crate::trace::with_header(properties, crate::trace::current())
}
