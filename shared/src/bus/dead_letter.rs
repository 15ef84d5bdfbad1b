//! The dead-letter queue: where a message that can never be handled is parked, so it neither
//! blocks its queue nor is lost without a trace.
//!
//! A consumer that meets such a message (it cannot be decoded, its kind is unknown on that
//! queue, or the database refuses its data for good) publishes a copy to the fanout exchange
//! `dead.letters` and only then acknowledges the original. The copy keeps the body and the
//! AMQP properties (type, message id, correlation id) and adds headers that say where it came
//! from and why:
//!
//! | header | value |
//! | --- | --- |
//! | `x-switchboard-queue` | the queue it was consumed from |
//! | `x-switchboard-reason` | `malformed`, `unknown_kind` or `refused` (the database refused its data) |
//! | `x-switchboard-error` | the error, for people (at most 1,000 characters) |
//!
//! The routing key is the original queue's name. Every process declares the exchange and the
//! durable queue `dead.letters` bound to it at every connection, so the parked messages wait for
//! an operator (the management UI's "get messages", or a shovel back to their queue once the
//! cause is fixed). The queue keeps the newest [`MAX_LENGTH`] messages, so a flood of bad
//! input cannot fill the broker's disk. `bus_dead_lettered_total{queue, reason}` counts them.

use lapin::{
    BasicProperties,
    message::Delivery,
    types::{AMQPValue, FieldTable},
};

use super::{Bus, BusError, Durability, QueueSpec};

/// The exchange and the queue parked messages go to.
pub const EXCHANGE: &str = "dead.letters";
pub const QUEUE: &str = "dead.letters";
/// Parked messages kept; past it the oldest are dropped.
pub const MAX_LENGTH: u32 = 100_000;

/// The dead-letter queue, bound to [`EXCHANGE`].
pub fn queue() -> QueueSpec {
    QueueSpec::durable(QUEUE).bind(EXCHANGE, "").max_length(MAX_LENGTH)
}

/// Why a message can never be handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poison {
    /// A short, fixed label (`malformed`, `unknown_kind`, `refused`): a metric label and the
    /// `x-switchboard-reason` header.
    pub reason: &'static str,
    /// What exactly was wrong, for the log and the `x-switchboard-error` header.
    pub detail: String,
}

impl Poison {
    /// The body could not be read as the message the queue carries.
    pub fn malformed(detail: impl std::fmt::Display) -> Self {
        Self { reason: "malformed", detail: detail.to_string() }
    }

    /// A kind this queue does not carry.
    pub fn unknown_kind(kind: Option<&str>) -> Self {
        Self { reason: "unknown_kind", detail: format!("no handler for kind {kind:?}") }
    }

    /// The database (or another permanent rule) refused the message's data.
    pub fn refused(detail: impl std::fmt::Display) -> Self {
        Self { reason: "refused", detail: detail.to_string() }
    }
}

impl From<super::DecodeError> for Poison {
    fn from(error: super::DecodeError) -> Self {
        match error {
            super::DecodeError::NotCarried { kind } => Self::unknown_kind(Some(&kind)),
            other => Self::malformed(other),
        }
    }
}

impl std::fmt::Display for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl Bus {
    /// Parks `delivery`, consumed from `queue`, in the dead-letter queue, confirmed. The caller
    /// acknowledges the original only once this succeeded; on an error the broker is away and
    /// the delivery stays unacknowledged, to be parked when it comes back.
    pub async fn dead_letter(
        &self,
        queue: &str,
        delivery: &Delivery,
        poison: &Poison,
    ) -> Result<(), BusError> {
        self.dead_letter_body(queue, &delivery.properties, &delivery.data, poison).await
    }

    /// [`Bus::dead_letter`] for part of a delivery (one item of a batch): `body` is parked with
    /// the delivery's `properties`.
    pub async fn dead_letter_body(
        &self,
        queue: &str,
        original: &BasicProperties,
        body: &[u8],
        poison: &Poison,
    ) -> Result<(), BusError> {
        tracing::warn!(queue, reason = poison.reason, error = %poison.detail, "parking a message in the dead-letter queue");
        let mut headers = FieldTable::default();
        // The original headers, less the sender-selected routing keys, which mean nothing on
        // the fanout exchange.
        for (name, value) in original.headers().iter().flat_map(|h| h.inner()) {
            if !matches!(name.as_str(), "CC" | "BCC") {
                headers.insert(name.clone(), value.clone());
            }
        }
        headers.insert("x-switchboard-queue".into(), AMQPValue::LongString(queue.into()));
        headers.insert("x-switchboard-reason".into(), AMQPValue::LongString(poison.reason.into()));
        let detail: String = poison.detail.chars().take(1000).collect();
        headers.insert("x-switchboard-error".into(), AMQPValue::LongString(detail.as_str().into()));
        // Everything but the expiration, which would make the parked copy vanish.
        let mut properties = BasicProperties::default().with_headers(headers);
        if let Some(kind) = original.kind() {
            properties = properties.with_type(kind.clone());
        }
        if let Some(id) = original.message_id() {
            properties = properties.with_message_id(id.clone());
        }
        if let Some(id) = original.correlation_id() {
            properties = properties.with_correlation_id(id.clone());
        }
        if let Some(content_type) = original.content_type() {
            properties = properties.with_content_type(content_type.clone());
        }
        if let Some(timestamp) = original.timestamp() {
            properties = properties.with_timestamp(*timestamp);
        }
        self.publish_bytes(EXCHANGE, queue, body, properties, Durability::Confirmed, false).await?;
        metrics::counter!("bus_dead_lettered_total", "queue" => metric_queue(queue), "reason" => poison.reason)
            .increment(1);
        Ok(())
    }
}

/// The queue as a metric label: an edge's own queue is named after the edge, so all of them
/// count as `edge`.
fn metric_queue(queue: &str) -> String {
    if queue.starts_with("edge.") { "edge".to_owned() } else { queue.to_owned() }
}
