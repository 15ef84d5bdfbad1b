//! Request/reply over the bus (`reply_to` + `correlation_id`), as when the edge asks the
//! messages worker whether a user is in a conversation.
//!
//! Requests use RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): the requester consumes
//! the pseudo-queue on one channel and publishes its requests on that same channel, so no reply
//! queue is declared per process or per request. Replies are matched to waiting callers by
//! `correlation_id`. A request carries an AMQP `expiration` equal to the caller's timeout, so a
//! server that was down does not work through requests nobody waits for any more.
//!
//! The request is published as mandatory on a confirm-mode channel, so a request that no
//! queue is bound to (the server has never run) fails at once with `Unavailable`.
//!
//! A reply body is `{ "ok": <response> }` or `{ "error": { "code", "message" } }` inside the
//! usual [`Envelope`], whose kind is the response's kind.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex as SyncMutex},
    time::Duration,
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

use super::{
    Bus, BusError, BusMessage, Durability, Envelope, Outcome, Poison, Route, Routed, consume::ConsumeOptions,
    in_time, topology::QueueSpec,
};
use crate::{
    contract::{
        AckError,
        bus::{BatchedReply, ReplyBatch},
    },
    sync::lock,
};

pub(super) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A request, and the type of its answer.
pub trait Request: BusMessage {
    type Response: BusMessage;
}

/// The body of a reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply<T> {
    Ok(T),
    Error(AckError),
}

/// Why a request got no answer. `Timeout` means the outcome is unknown.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no reply in time")]
    Timeout,
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The server answered with an error meant for the client.
    #[error("the server answered: {0}")]
    Refused(AckError),
    #[error("the reply could not be read: {0}")]
    Malformed(String),
}

/// A reply as it reached the requester: a message of its own, or one item of a
/// [`ReplyBatch`].
pub(super) enum Arrived {
    Message(Vec<u8>),
    Batched(serde_json::Value),
}

pub(super) type Pending = Arc<SyncMutex<HashMap<String, oneshot::Sender<Arrived>>>>;

/// A request the broker has taken, waiting for its reply.
pub struct PendingReply<T> {
    pub(super) receiver: oneshot::Receiver<Arrived>,
    /// Held for its `Drop`.
    pub(super) _waiting: Waiting,
    pub(super) deadline: tokio::time::Instant,
    pub(super) kind: std::marker::PhantomData<T>,
}

/// A requester's place among those waiting for a reply, given up when it is dropped: a caller
/// that stops waiting (its own timeout came first, or it was cancelled) leaves nothing behind,
/// also when no reply ever comes (a command that expired in its queue is never answered).
pub(super) struct Waiting {
    pub(super) pending: Pending,
    pub(super) correlation: String,
}

/// `bus_requests_waiting`, looked up once: it changes twice per request, on the chat path.
static REQUESTS_WAITING: std::sync::LazyLock<metrics::Gauge> =
    std::sync::LazyLock::new(|| metrics::gauge!("bus_requests_waiting"));

impl Waiting {
    /// A request whose answer is now waited for: counted in `bus_requests_waiting` until the
    /// guard goes (answered, timed out, or its caller gone), so a leak of routes shows there.
    pub(super) fn new(pending: Pending, correlation: String) -> Self {
        REQUESTS_WAITING.increment(1.0);
        Self { pending, correlation }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.correlation);
        REQUESTS_WAITING.decrement(1.0);
    }
}

impl<T: BusMessage> PendingReply<T> {
    /// Waits for the reply until the request's timeout.
    pub async fn reply(self) -> Result<T, RequestError> {
        let arrived = match tokio::time::timeout_at(self.deadline, self.receiver).await {
            Ok(Ok(arrived)) => arrived,
            Ok(Err(_)) => return Err(BusError::Unavailable("the reply channel closed".into()).into()),
            Err(_) => return Err(RequestError::Timeout),
        };
        match arrived {
            Arrived::Message(bytes) => decode_reply(&bytes),
            Arrived::Batched(body) => decode_batched_reply(body),
        }
    }
}

/// Reads a reply body (an [`Envelope`] of [`Reply`] whose kind is `T`'s) into the response or
/// the server's refusal. What [`PendingReply::reply`] does with the bytes that arrive; public
/// so the fuzz targets of `fuzz/` run it on any input.
pub fn decode_reply<T: BusMessage>(bytes: &[u8]) -> Result<T, RequestError> {
    let reply = Envelope::<Reply<T>>::decode_as(bytes, T::KIND)
        .map_err(|e| RequestError::Malformed(e.to_string()))?;
    answer(reply.data)
}

/// [`decode_reply`] for one item of a [`ReplyBatch`]: the body of a reply without its envelope.
pub fn decode_batched_reply<T: BusMessage>(body: serde_json::Value) -> Result<T, RequestError> {
    let reply = crate::contract::object::from_value::<Reply<T>>(body)
        .map_err(|e| RequestError::Malformed(e.to_string()))?;
    answer(reply)
}

fn answer<T>(reply: Reply<T>) -> Result<T, RequestError> {
    match reply {
        Reply::Ok(response) => Ok(response),
        Reply::Error(error) => Err(RequestError::Refused(error)),
    }
}

/// The requester's side: one reply channel, opened on first use and again after it dies.
#[derive(Default)]
pub(crate) struct Replies {
    current: Mutex<Option<(Channel, Pending)>>,
}

impl Bus {
    /// Sends `request` to its route and waits at most `timeout` for the reply. (Callers that
    /// must keep the order of many requests to one route use a
    /// [`RequestBatcher`](super::RequestBatcher).)
    pub async fn request<R: Request + Routed>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, RequestError> {
        let route = request.route();
        let deadline = tokio::time::Instant::now() + timeout;
        let (channel, pending) = self.reply_channel().await?;
        let envelope = Envelope::wrap(R::KIND, request);
        let correlation = Uuid::now_v7().to_string();
        let (sender, receiver) = oneshot::channel();
        lock(&pending).insert(correlation.clone(), sender);
        // Dropped on any error below, which takes the route away again.
        let waiting = Waiting::new(pending, correlation.clone());
        let properties = super::properties::<R>(&envelope)
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_correlation_id(correlation.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into())
            .with_delivery_mode(1);
        publish_request_message(&channel, &route, &envelope.encode(), properties).await?;
        PendingReply::<R::Response> { receiver, _waiting: waiting, deadline, kind: std::marker::PhantomData }
            .reply()
            .await
    }

    pub(super) async fn reply_channel(&self) -> Result<(Channel, Pending), BusError> {
        let mut current = self.inner.replies.current.lock().await;
        if let Some((channel, pending)) = current.as_ref().filter(|(c, _)| c.status().connected()) {
            return Ok((channel.clone(), pending.clone()));
        }
        let channel = self.channel().await?;
        in_time("confirm mode", channel.confirm_select(ConfirmSelectOptions::default())).await?;
        let mut replies = in_time(
            "consuming replies",
            channel.basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await?;
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                // A reply whose caller already timed out finds nobody: dropped.
                if delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(ReplyBatch::KIND) {
                    let Ok(batch) = Envelope::<ReplyBatch>::decode(&delivery.data) else {
                        tracing::warn!("dropping an unreadable batch of replies");
                        continue;
                    };
                    let mut routes = lock(&routes);
                    for item in batch.data.replies {
                        if let Some(waiter) = routes.remove(&item.correlation_id) {
                            let _ = waiter.send(Arrived::Batched(item.reply));
                        }
                    }
                    continue;
                }
                let Some(id) = delivery.properties.correlation_id().as_ref() else { continue };
                if let Some(waiter) = lock(&routes).remove(id.as_str()) {
                    let _ = waiter.send(Arrived::Message(delivery.data));
                }
            }
            // The channel died: fail every waiter now rather than at its timeout.
            lock(&routes).clear();
        });
        *current = Some((channel.clone(), pending.clone()));
        Ok((channel, pending))
    }

    /// Hands `reply` to the request of this process waiting for its correlation id, if any: an
    /// answer that came inside another message (a fan-out that carries the answer to the send
    /// that caused it). Returns whether a caller was waiting.
    pub async fn answer_waiting(&self, reply: BatchedReply) -> bool {
        let pending = match self.inner.replies.current.lock().await.as_ref() {
            Some((_, pending)) => pending.clone(),
            None => return false,
        };
        let waiter = lock(&pending).remove(&reply.correlation_id);
        waiter.is_some_and(|waiter| waiter.send(Arrived::Batched(reply.reply)).is_ok())
    }

    /// Answers requests arriving on `queue` with `handler` until shutdown. Each request is
    /// acknowledged once answered; a malformed one is answered `invalid` and dropped.
    pub fn serve<R, H, F>(&self, queue: QueueSpec, options: ConsumeOptions, handler: H)
    where
        R: Request,
        H: Fn(R) -> F + Send + Sync + 'static,
        F: Future<Output = Result<R::Response, AckError>> + Send + 'static,
    {
        let bus = self.clone();
        let handler = Arc::new(handler);
        self.consume(queue, options, move |incoming| {
            let bus = bus.clone();
            let handler = handler.clone();
            async move {
                if incoming.delivery.properties.reply_to().is_none() {
                    return Outcome::DeadLetter(Poison::malformed(format!("a {} without reply_to", R::KIND)));
                }
                let (reply, outcome) = match incoming.decode::<R>() {
                    Ok(request) => (handler(request.data).await, Outcome::Ack),
                    Err(error) => {
                        (Err(AckError::invalid("malformed request")), Outcome::DeadLetter(error.into()))
                    }
                };
                bus.reply::<R>(&incoming.delivery.properties, reply).await;
                outcome
            }
        });
    }
}

impl Bus {
    /// Sends the answer to a request whose AMQP properties are `request`. A reply that cannot
    /// be sent is logged and dropped: the requester times out and may retry.
    pub async fn reply<R: Request>(&self, request: &BasicProperties, result: Result<R::Response, AckError>) {
        self.reply_many(vec![Outgoing::new::<R>(request, result)]).await;
    }
}

/// One reply, ready for [`Bus::reply_many`]: where it goes and what it says.
pub struct Outgoing<'a> {
    reply_to: &'a str,
    correlation: Option<&'a str>,
    kind: &'static str,
    body: serde_json::Value,
}

impl<'a> Outgoing<'a> {
    /// The answer to the request whose AMQP properties are `request`.
    pub fn new<R: Request>(request: &'a BasicProperties, result: Result<R::Response, AckError>) -> Self {
        let reply_to = request.reply_to().as_ref().map_or("", |r| r.as_str());
        let correlation = request.correlation_id().as_ref().map(|c| c.as_str());
        Self::to::<R>(reply_to, correlation, result)
    }

    /// The answer to the item with `correlation` of a
    /// [`RequestBatch`](crate::contract::bus::RequestBatch) whose AMQP properties are `request`.
    pub fn item<R: Request>(
        request: &'a BasicProperties,
        correlation: &'a str,
        result: Result<R::Response, AckError>,
    ) -> Self {
        let reply_to = request.reply_to().as_ref().map_or("", |r| r.as_str());
        Self::to::<R>(reply_to, Some(correlation), result)
    }

    fn to<R: Request>(
        reply_to: &'a str,
        correlation: Option<&'a str>,
        result: Result<R::Response, AckError>,
    ) -> Self {
        let body = match result {
            Ok(response) => Reply::Ok(response),
            Err(error) => Reply::Error(error),
        };
        // Our own types always serialize.
        let body = serde_json::to_value(&body).unwrap_or_default();
        Self { reply_to, correlation, kind: <R::Response as BusMessage>::KIND, body }
    }

    /// The answer as an item of a [`ReplyBatch`], to travel inside another message (see
    /// [`Bus::answer_waiting`]); `None` when the request had no correlation id.
    pub fn batched(&self) -> Option<BatchedReply> {
        Some(BatchedReply { correlation_id: self.correlation?.to_owned(), reply: self.body.clone() })
    }
}

impl Bus {
    /// Sends many answers at once, as one message per requester: a worker that handled a
    /// batch answers each edge with one [`ReplyBatch`] instead of one message per request. A
    /// requester with a single answer gets it as a plain reply. Answers that cannot be sent
    /// are logged and dropped: their requesters time out and may retry.
    pub async fn reply_many(&self, replies: Vec<Outgoing<'_>>) {
        let mut by_requester: Vec<(&str, Vec<Outgoing<'_>>)> = Vec::new();
        for reply in replies {
            if reply.reply_to.is_empty() {
                continue;
            }
            match by_requester.iter_mut().find(|(to, _)| *to == reply.reply_to) {
                Some((_, group)) => group.push(reply),
                None => by_requester.push((reply.reply_to, vec![reply])),
            }
        }
        let sends = by_requester.into_iter().map(|(reply_to, mut group)| async move {
            let (body, properties) = if group.len() == 1 {
                let Some(reply) = group.pop() else { return };
                let envelope = Envelope::wrap(reply.kind, &reply.body);
                let mut properties = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_type(reply.kind.into());
                if let Some(correlation) = reply.correlation {
                    properties = properties.with_correlation_id(correlation.into());
                }
                (envelope.encode(), properties)
            } else {
                let batch = ReplyBatch {
                    replies: group
                        .into_iter()
                        .filter_map(|reply| {
                            let correlation_id = reply.correlation?.to_owned();
                            Some(BatchedReply { correlation_id, reply: reply.body })
                        })
                        .collect(),
                };
                let envelope = Envelope::new(batch);
                let properties = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_type(ReplyBatch::KIND.into());
                (envelope.encode(), properties)
            };
            if let Err(error) =
                self.publish_bytes("", reply_to, &body, properties, Durability::Transient, false).await
            {
                tracing::warn!(%error, "could not send replies");
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// Publishes one request message (a request, or a batch of them) on the reply channel and
/// waits for the broker's confirm. Mandatory: a request no queue is bound for comes back at
/// once as returned, and its callers hear `unavailable` instead of waiting for their timeout.
pub(super) async fn publish_request_message(
    channel: &Channel,
    route: &Route,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BusError> {
    debug_assert!(route.also.is_empty(), "a request goes to one queue");
    let publish = channel.basic_publish(
        route.exchange.into(),
        route.key.as_ref().into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        body,
        properties,
    );
    let confirmed = async { publish.await?.await };
    let confirmation = match in_time("publishing a request", confirmed).await {
        Ok(confirmation) => confirmation,
        Err(error) => {
            // A channel that does not answer is closed (in the background: closing may not be
            // answered either), so the next request opens a fresh one.
            let stale = channel.clone();
            tokio::spawn(
                async move { in_time("closing a channel", stale.close(200, "no answer".into())).await },
            );
            return Err(error);
        }
    };
    metrics::counter!("bus_published_total", "exchange" => route.exchange).increment(1);
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => {
            metrics::counter!("bus_returned_total", "exchange" => route.exchange).increment(1);
            Err(BusError::Unavailable(format!("nothing serves {}", route.key)))
        }
        Confirmation::Nack(_) => Err(BusError::Nacked),
    }
}

impl<T: serde::de::DeserializeOwned> Envelope<T> {
    /// Decodes a body whose kind is given at run time (replies carry the response's kind).
    pub(crate) fn decode_as(bytes: &[u8], kind: &str) -> Result<Self, super::DecodeError> {
        let envelope = Envelope::<T>::decode_objects(bytes)?;
        if envelope.v != super::envelope::VERSION {
            return Err(super::DecodeError::Version(envelope.v));
        }
        if envelope.kind != kind {
            return Err(super::DecodeError::Kind { expected: "the response kind", actual: envelope.kind });
        }
        Ok(envelope)
    }
}
