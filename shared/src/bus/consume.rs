//! Consuming: manual acknowledgements, a bounded prefetch, and a consumer that restarts itself.
//!
//! [`Bus::consume`] spawns one task per queue. Each (re)start waits for the bus to be ready,
//! opens a channel, sets `basic.qos` to the prefetch, declares the queue and its bindings, and
//! consumes. A delivery is acknowledged only after its handler returned [`Outcome::Ack`], so a
//! process that dies mid-work hands the delivery back to the broker, which redelivers it (every
//! handler is therefore idempotent). At shutdown the consumer is cancelled first (no new
//! deliveries), then in-flight handlers finish within the grace period; whatever is still
//! unacknowledged when the connection closes goes back to the queue.

use std::{future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::sync::Semaphore;

use super::{
    BROKER_CALL_TIMEOUT, Bus, BusError, BusMessage, DecodeError, Envelope, Inbound, Poison, in_time,
    topology::{self, Lifetime, QueueSpec},
};

/// What to do with a delivery once its handler ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or a duplicate of something done): remove it from the queue.
    Ack,
    /// Could not be done now (database or broker unreachable): try it again after a pause (in
    /// place, keeping its place in the queue), until it succeeds or the process stops. Only
    /// for transient causes: a permanent one would be retried for ever.
    Requeue,
    /// Can never be done (malformed, unknown kind, data the database refuses): parked in the
    /// dead-letter queue with the reason, then removed, so the queue goes on.
    DeadLetter(Poison),
}

/// How a consumer runs its handler.
#[derive(Clone, Default)]
pub struct ConsumeOptions {
    /// Deliveries handled at once. 1 keeps the queue's order (the messages worker's shards);
    /// more raises throughput where order does not matter.
    pub concurrency: usize,
    /// Unacknowledged deliveries the broker sends ahead; `None` takes `RABBITMQ_PREFETCH`.
    pub prefetch: Option<u16>,
    /// Called each time the consumer (re)starts, before the first delivery: a consumer whose
    /// state depends on a continuous input (presence) learns that there was a gap.
    pub on_start: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl ConsumeOptions {
    pub fn ordered() -> Self {
        Self { concurrency: 1, ..Self::default() }
    }

    pub fn concurrent(concurrency: usize) -> Self {
        Self { concurrency: concurrency.max(1), ..Self::default() }
    }
}

/// One delivery, as a handler sees it.
#[derive(Clone)]
pub struct Incoming {
    /// Shared, so a handler that asked for a retry can be given the same delivery again.
    pub delivery: Arc<Delivery>,
}

impl Incoming {
    pub fn decode<T: BusMessage>(&self) -> Result<Envelope<T>, DecodeError> {
        Envelope::decode(&self.delivery.data)
    }

    /// Reads a delivery of a queue that carries several kinds.
    pub fn decode_inbound<Q: Inbound>(&self) -> Result<Envelope<Q>, DecodeError> {
        Envelope::decode_inbound(&self.delivery.data)
    }

    /// The message's kind, for queues that carry several kinds: see [`kind_of`].
    pub fn kind(&self) -> Option<String> {
        kind_of(&self.delivery)
    }

    pub fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }
}

/// First pause before a delivery that could not be handled is tried again (database down), so
/// it is retried at a bounded rate instead of spinning; doubled up to [`MAX_RETRY_PAUSE`].
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Tries `attempt` until it gives an answer (`Some`), pausing between tries from
/// [`REQUEUE_PAUSE`] doubling to [`MAX_RETRY_PAUSE`]; `None` when `stop` comes first.
///
/// This is how a delivery that cannot be handled yet is retried: in place, not handed back
/// to the queue, where later deliveries would overtake it and every return would count as a
/// redelivery, which quorum queues (RabbitMQ 4) stop after their delivery limit.
pub async fn retry_in_place<T, A, Fut>(stop: impl Future<Output = ()>, mut attempt: A) -> Option<T>
where
    A: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    tokio::pin!(stop);
    let mut pause = REQUEUE_PAUSE;
    loop {
        if let Some(answer) = attempt().await {
            return Some(answer);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = &mut stop => return None,
        }
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

impl Bus {
    /// Consumes `queue` until shutdown, restarting with backoff whenever the channel dies.
    pub fn consume<H, F>(&self, queue: QueueSpec, options: ConsumeOptions, handler: H)
    where
        H: Fn(Incoming) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let bus = self.clone();
        let handler = Arc::new(handler);
        self.shutdown().spawn(async move {
            let mut delays = super::backoff();
            loop {
                if !bus.wait_ready().await {
                    return;
                }
                match bus.consume_once(&queue, options.clone(), handler.clone()).await {
                    Ok(()) => return,
                    Err(error) => tracing::warn!(queue = %queue.name, %error, "consumer stopped; restarting"),
                }
                let delay = delays.next().unwrap_or(super::MAX_RECONNECT_DELAY);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = bus.shutdown().triggered() => return,
                }
            }
        });
    }

    /// A new channel with `prefetch`, `queue` declared on it, and a consumer of the queue
    /// (manual acks). For consumers that settle deliveries their own way (the message shards'
    /// batches); [`Bus::consume`] covers the rest.
    pub async fn open_consumer(
        &self,
        queue: &QueueSpec,
        prefetch: u16,
    ) -> Result<(lapin::Channel, lapin::Consumer), BusError> {
        let mut channel = self.channel().await?;
        in_time("setting the prefetch", channel.basic_qos(prefetch, BasicQosOptions::default())).await?;
        let declared =
            tokio::time::timeout(BROKER_CALL_TIMEOUT, queue.declare(&channel, self.inner.queue_type))
                .await
                .map_err(|_| BusError::Timeout("declaring a queue"))?;
        if let Err(error) = declared {
            if queue.lifetime != Lifetime::Durable || !topology::is_inequivalent(&error) {
                return Err(error.into());
            }
            // The queue exists with an earlier version's arguments, and a queue's arguments
            // cannot change. Refusing to consume would stop the system over a setting; the
            // queue is used as it is and the operator is told how to get the new ones.
            tracing::warn!(
                queue = %queue.name, %error,
                "the queue exists with other arguments than this version declares; using it as it is. \
                 To get them, delete the queue once it is empty (it is declared again at once)"
            );
            channel = self.channel().await?;
            in_time("setting the prefetch", channel.basic_qos(prefetch, BasicQosOptions::default())).await?;
            in_time("declaring a queue", queue.declare_existing(&channel)).await?;
        }
        let consumer = in_time(
            "consuming",
            channel.basic_consume(
                queue.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        tracing::debug!(queue = %queue.name, "consuming");
        Ok((channel, consumer))
    }

    /// One life of a consumer: returns `Ok` at shutdown, `Err` when the channel died.
    async fn consume_once<H, F>(
        &self,
        queue: &QueueSpec,
        options: ConsumeOptions,
        handler: Arc<H>,
    ) -> Result<(), BusError>
    where
        H: Fn(Incoming) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let prefetch = options.prefetch.unwrap_or(self.inner.prefetch);
        let (channel, mut consumer) = self.open_consumer(queue, prefetch).await?;
        if let Some(on_start) = &options.on_start {
            on_start();
        }
        let permits = Arc::new(Semaphore::new(options.concurrency));
        let shutdown = self.shutdown().clone();
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.triggered() => {
                    // Stop new deliveries; those in flight finish under the shutdown tracker.
                    let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                    return Ok(());
                }
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(error.into()),
                None => return Err(BusError::Unavailable("the consumer was cancelled by the broker".into())),
            };
            metrics::counter!("bus_consumed_total", "queue" => queue.name.clone()).increment(1);
            // Waiting for a permit is the back-pressure: with every permit busy we stop reading,
            // and the prefetch bounds what the broker sends meanwhile.
            let Ok(permit) = permits.clone().acquire_owned().await else { return Ok(()) };
            let handler = handler.clone();
            let queue_name = queue.name.clone();
            let stopping = shutdown.clone();
            let bus = self.clone();
            let work = async move {
                let acker = delivery.acker.clone();
                let incoming = Incoming { delivery: Arc::new(delivery) };
                // A delivery that cannot be handled now is retried in place. At shutdown it is
                // left unacknowledged, and closing the channel returns it to the queue.
                let outcome = retry_in_place(stopping.triggered(), || async {
                    match handler(incoming.clone()).await {
                        Outcome::Requeue => None,
                        settled => Some(settled),
                    }
                })
                .await;
                let settled = match outcome {
                    Some(Outcome::DeadLetter(poison)) => {
                        match bus.dead_letter(&queue_name, &incoming.delivery, &poison).await {
                            Ok(()) => in_time("acknowledging", acker.ack(BasicAckOptions::default())).await,
                            // The broker is away: unacknowledged, the delivery comes back and
                            // is parked then.
                            Err(error) => {
                                tracing::warn!(queue = %queue_name, %error, "could not park a message");
                                let requeue = BasicNackOptions { requeue: true, ..Default::default() };
                                in_time("refusing", acker.nack(requeue)).await
                            }
                        }
                    }
                    Some(_) => in_time("acknowledging", acker.ack(BasicAckOptions::default())).await,
                    None => Ok(true),
                };
                if let Err(error) = settled {
                    // The channel is gone; the broker requeues the delivery by itself.
                    tracing::warn!(queue = %queue_name, %error, "could not settle a delivery");
                }
                drop(permit);
            };
            if options.concurrency == 1 {
                work.await;
            } else {
                shutdown.spawn(work);
            }
        }
    }
}

/// The kind of a delivery: the AMQP `type` property, which every Switchboard process sets, or
/// else the envelope's own `kind` (a publisher in another language may leave `type` out).
pub fn kind_of(delivery: &Delivery) -> Option<String> {
    if let Some(kind) = delivery.properties.kind() {
        return Some(kind.as_str().to_owned());
    }
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    serde_json::from_slice::<Kind>(&delivery.data).ok().map(|k| k.kind)
}
