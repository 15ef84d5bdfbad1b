//! Requests to one route, sent as batches without waiting for anything: the edge's hop to the
//! chat shards.
//!
//! A [`RequestBatcher`] owns one route (exchange and routing key) and one task. A request
//! handed to [`RequestBatcher::send`] joins a queue at once, so callers that must keep the
//! order of their requests keep it by the order of their `send` calls. The task publishes
//! what is queued as one message and waits for the broker's confirm; whatever arrives
//! meanwhile goes into the next message. An idle route therefore sends a request at once, as
//! a plain request; a busy one sends [`RequestBatch`]es as large as the confirm round trip
//! lets them grow (at most [`MAX_BATCH`]). No timer is involved.
//!
//! Each item keeps its own correlation id, so its answer reaches its own caller whether the
//! worker answers it alone or in an `rpc.replies` batch. The confirm covers the whole
//! message: every item of a batch the broker refused, or that no queue took, is answered
//! `unavailable`.

use std::time::Duration;

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Bus, BusError, BusMessage, Envelope, PendingReply, RequestError, Route, Routed,
    rpc::{Arrived, DIRECT_REPLY_TO, Request, Waiting, publish_request_message},
};
use crate::{
    contract::bus::{BatchedRequest, RequestBatch, TraceParent},
    sync::lock,
    trace,
};

/// The most requests in one message.
pub const MAX_BATCH: usize = 256;

/// The AMQP header by which a requester says it takes answers inside fan-out deliveries
/// (`Deliver::reply`) as well as in replies: a worker answers a send that way only when its
/// request carries it, so a worker of this version still answers an older edge with replies.
pub const ACK_IN_FAN_OUT: &str = "x-switchboard-ack-in-fan-out";

/// Sends the requests given to it to one route, batched (see the module docs).
pub struct RequestBatcher {
    queue: mpsc::UnboundedSender<Queued>,
    timeout: Duration,
    /// Where its messages go; every request sent through it must have this route.
    route: Route,
}

/// A request waiting for its batch.
struct Queued {
    id: Uuid,
    kind: &'static str,
    correlation: String,
    data: Box<RawValue>,
    /// Where its answer goes, once registered with the reply channel.
    reply: oneshot::Sender<Arrived>,
    /// Told once the broker confirmed (or refused) the message that carried it.
    published: oneshot::Sender<Result<Waiting, BusError>>,
    /// The trace of the caller's span, when traces are exported.
    traceparent: Option<TraceParent>,
}

/// A request in a [`RequestBatcher`]'s queue or on its way to the broker.
pub struct QueuedRequest<T> {
    published: oneshot::Receiver<Result<Waiting, BusError>>,
    reply: oneshot::Receiver<Arrived>,
    deadline: tokio::time::Instant,
    kind: std::marker::PhantomData<T>,
}

impl<T: BusMessage> QueuedRequest<T> {
    /// Waits until the broker confirmed the message carrying the request: `unavailable` when
    /// it refused it or no queue took it, else the handle to wait for the reply.
    pub async fn confirmed(self) -> Result<PendingReply<T>, RequestError> {
        let waiting = match tokio::time::timeout_at(self.deadline, self.published).await {
            Ok(Ok(Ok(waiting))) => waiting,
            Ok(Ok(Err(error))) => return Err(error.into()),
            Ok(Err(_)) => return Err(BusError::Unavailable("the request batcher stopped".into()).into()),
            Err(_) => return Err(RequestError::Timeout),
        };
        Ok(PendingReply {
            receiver: self.reply,
            _waiting: waiting,
            deadline: self.deadline,
            kind: std::marker::PhantomData,
        })
    }
}

impl Bus {
    /// A batcher for the requests to `route`, each answered within `timeout` (also the
    /// messages' AMQP expiration). Its task ends when the batcher is dropped.
    pub fn request_batcher(&self, route: Route, timeout: Duration) -> RequestBatcher {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(self.clone(), route.clone(), timeout, receiver));
        RequestBatcher { queue, timeout, route }
    }
}

impl RequestBatcher {
    /// Queues `request` behind every request sent before it; returns at once. The caller bounds
    /// how many requests it queues (the edge's admission control).
    pub fn send<R: Request + Routed>(&self, request: &R) -> QueuedRequest<R::Response> {
        debug_assert_eq!(request.route(), self.route, "a batcher sends only to its own route");
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (reply_sender, reply) = oneshot::channel();
        let (published_sender, published) = oneshot::channel();
        // Our own types always serialize.
        let data = serde_json::value::to_raw_value(request)
            .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"));
        let queued = Queued {
            id: Uuid::now_v7(),
            kind: R::KIND,
            correlation: Uuid::now_v7().to_string(),
            data,
            reply: reply_sender,
            published: published_sender,
            traceparent: trace::current(),
        };
        // A send error means the task is gone, and `confirmed` says so.
        let _ = self.queue.send(queued);
        QueuedRequest { published, reply, deadline, kind: std::marker::PhantomData }
    }
}

async fn run(bus: Bus, route: Route, timeout: Duration, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that stopped waiting (its own timeout) is left out: nobody would read the
        // answer.
        batch.retain(|queued| !queued.published.is_closed());
        if !batch.is_empty() {
            publish(&bus, &route, timeout, std::mem::take(&mut batch)).await;
        }
    }
}

/// Publishes `batch` as one message on the reply channel and tells each item the outcome.
async fn publish(bus: &Bus, route: &Route, timeout: Duration, batch: Vec<Queued>) {
    let (channel, pending) = match bus.reply_channel().await {
        Ok(found) => found,
        Err(error) => {
            for queued in batch {
                let _ = queued.published.send(Err(error.clone()));
            }
            return;
        }
    };
    // This requester takes the answer to a send inside its fan-out (see `ACK_IN_FAN_OUT`).
    let mut headers = FieldTable::default();
    headers.insert(ACK_IN_FAN_OUT.into(), AMQPValue::Boolean(true));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers)
        .with_reply_to(DIRECT_REPLY_TO.into())
        .with_expiration(timeout.as_millis().to_string().into())
        .with_delivery_mode(1);
    let (body, properties) = if let [one] = batch.as_slice() {
        let envelope = Envelope { id: one.id, ..Envelope::wrap(one.kind, &one.data) };
        let properties = properties
            .with_type(one.kind.into())
            .with_message_id(one.id.to_string().into())
            .with_correlation_id(one.correlation.as_str().into());
        (envelope.encode(), trace::with_header(properties, one.traceparent.clone()))
    } else {
        let requests = batch
            .iter()
            .map(|queued| BatchedRequest {
                id: queued.id,
                correlation_id: queued.correlation.clone(),
                kind: queued.kind.to_owned(),
                data: queued.data.clone(),
                traceparent: queued.traceparent.clone(),
            })
            .collect();
        let envelope = Envelope::new(RequestBatch { requests });
        let properties =
            properties.with_type(RequestBatch::KIND.into()).with_message_id(envelope.id.to_string().into());
        (envelope.encode(), properties)
    };
    // Registered before the publish, so no answer can come before its caller is known.
    let mut waiting = Vec::with_capacity(batch.len());
    let mut told = Vec::with_capacity(batch.len());
    {
        let mut routes = lock(&pending);
        for queued in batch {
            routes.insert(queued.correlation.clone(), queued.reply);
            waiting.push(Waiting::new(pending.clone(), queued.correlation));
            told.push(queued.published);
        }
    }
    metrics::histogram!("bus_request_batch_size").record(told.len() as f64);
    let outcome = publish_request_message(&channel, route, &body, properties).await;
    for (waiting, told) in waiting.into_iter().zip(told) {
        // Dropping `waiting` (when the caller is gone, or on an error) removes its route.
        let _ = told.send(outcome.clone().map(|()| waiting));
    }
}
