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
    Bus, BusError, BusMessage, Durability, Envelope, Outcome, Poison, consume::ConsumeOptions,
    topology::QueueSpec,
};
use crate::{contract::AckError, sync::lock};

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

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

type Pending = Arc<SyncMutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// A request the broker has taken, waiting for its reply.
pub struct PendingReply<T> {
    receiver: oneshot::Receiver<Vec<u8>>,
    pending: Pending,
    correlation: String,
    deadline: tokio::time::Instant,
    kind: std::marker::PhantomData<T>,
}

impl<T: BusMessage> PendingReply<T> {
    /// Waits for the reply until the request's timeout.
    pub async fn reply(self) -> Result<T, RequestError> {
        let bytes = match tokio::time::timeout_at(self.deadline, self.receiver).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return Err(BusError::Unavailable("the reply channel closed".into()).into()),
            Err(_) => {
                lock(&self.pending).remove(&self.correlation);
                return Err(RequestError::Timeout);
            }
        };
        decode_reply(&bytes)
    }
}

/// Reads a reply body (an [`Envelope`] of [`Reply`] whose kind is `T`'s) into the response or
/// the server's refusal. What [`PendingReply::reply`] does with the bytes that arrive; public
/// so the fuzz targets of `fuzz/` run it on any input.
pub fn decode_reply<T: BusMessage>(bytes: &[u8]) -> Result<T, RequestError> {
    let reply = Envelope::<Reply<T>>::decode_as(bytes, T::KIND)
        .map_err(|e| RequestError::Malformed(e.to_string()))?;
    match reply.data {
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
    /// Sends `request` to `exchange`/`routing_key` and waits at most `timeout` for the reply.
    pub async fn request<R: Request>(
        &self,
        exchange: &str,
        routing_key: &str,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, RequestError> {
        self.send_request(exchange, routing_key, request, timeout).await?.reply().await
    }

    /// The first half of [`Bus::request`]: returns once the broker took the request, with a
    /// handle to wait for the reply. Callers that must keep the order of their requests (one
    /// socket's sends) publish the next one as soon as this returns.
    pub async fn send_request<R: Request>(
        &self,
        exchange: &str,
        routing_key: &str,
        request: &R,
        timeout: Duration,
    ) -> Result<PendingReply<R::Response>, RequestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (channel, pending) = self.reply_channel().await?;
        let envelope = Envelope::wrap(R::KIND, request);
        let correlation = Uuid::now_v7().to_string();
        let (sender, receiver) = oneshot::channel();
        lock(&pending).insert(correlation.clone(), sender);
        let properties = super::properties::<R>(&envelope)
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_correlation_id(correlation.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into())
            .with_delivery_mode(1);
        // Mandatory, on a confirm-mode channel: a request no queue is bound for comes back at
        // once as returned, and the caller hears `unavailable` instead of waiting for its
        // timeout.
        let sent = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &envelope.encode(),
                properties,
            )
            .await;
        let confirmed = match sent {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        };
        let failure = match confirmed {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => None,
            Ok(Confirmation::Ack(Some(_))) => {
                Some(BusError::Unavailable(format!("nothing serves {routing_key}")))
            }
            Ok(Confirmation::Nack(_)) => Some(BusError::Nacked),
            Err(error) => Some(BusError::from(error)),
        };
        if let Some(error) = failure {
            lock(&pending).remove(&correlation);
            return Err(error.into());
        }
        metrics::counter!("bus_published_total", "exchange" => exchange.to_owned()).increment(1);
        Ok(PendingReply { receiver, pending, correlation, deadline, kind: std::marker::PhantomData })
    }

    async fn reply_channel(&self) -> Result<(Channel, Pending), BusError> {
        let mut current = self.inner.replies.current.lock().await;
        if let Some((channel, pending)) = current.as_ref().filter(|(c, _)| c.status().connected()) {
            return Ok((channel.clone(), pending.clone()));
        }
        let channel = self.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut replies = channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                let Some(id) = delivery.properties.correlation_id().as_ref() else { continue };
                // A reply whose caller already timed out finds nobody: dropped.
                if let Some(waiter) = lock(&routes).remove(id.as_str()) {
                    let _ = waiter.send(delivery.data);
                }
            }
            // The channel died: fail every waiter now rather than at its timeout.
            lock(&routes).clear();
        });
        *current = Some((channel.clone(), pending.clone()));
        Ok((channel, pending))
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
        let Some(reply_to) = request.reply_to() else { return };
        let body = match result {
            Ok(response) => Reply::Ok(response),
            Err(error) => Reply::Error(error),
        };
        let envelope = Envelope::wrap(<R::Response as BusMessage>::KIND, &body);
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(<R::Response as BusMessage>::KIND.into());
        if let Some(correlation) = request.correlation_id() {
            properties = properties.with_correlation_id(correlation.clone());
        }
        if let Err(error) = self
            .publish_bytes(
                "",
                reply_to.as_str(),
                &envelope.encode(),
                properties,
                Durability::Transient,
                false,
            )
            .await
        {
            tracing::warn!(kind = R::KIND, %error, "could not send a reply");
        }
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
