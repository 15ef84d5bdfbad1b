//! Publishing domain events (`contract::domain`) only while some backend listens.
//!
//! A process cannot ask the broker over AMQP which queues are bound to a key, so it lets the
//! broker's routing answer: an event is published mandatory and confirmed, and when the broker
//! returns it (no queue is bound to its key) that key is taken as unheard for [`UNHEARD_FOR`],
//! during which nothing of it is published. Nobody listening therefore costs one publish per
//! key per second per process, whatever the load; a backend that binds a queue receives
//! everything published from at most [`UNHEARD_FOR`] after its binding on.
//!
//! Delivery is at least once while the broker takes the publishes: the callers publish before
//! the work that caused the events is acknowledged, so a redelivery repeats them (same ids).
//! A publish the broker fails is counted (`bus_publish_errors_total`) and logged, not retried.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::join_all;

use super::{Bus, BusError, BusMessage, FixedRoute, Routed};
use crate::sync::lock;

/// How long a key nobody listened to stays unpublished.
pub const UNHEARD_FOR: Duration = Duration::from_secs(1);

/// A process's publisher of domain events; cheap to clone.
#[derive(Clone)]
pub struct DomainEvents {
    bus: Bus,
    /// Per kind, until when it is taken as unheard.
    unheard: Arc<Mutex<HashMap<&'static str, Instant>>>,
}

impl DomainEvents {
    pub fn new(bus: Bus) -> Self {
        Self { bus, unheard: Arc::default() }
    }

    /// Whether events of kind `E` are worth building now: false while nobody listens to them.
    pub fn heard<E: BusMessage + FixedRoute>(&self) -> bool {
        lock(&self.unheard).get(E::KIND).is_none_or(|until| Instant::now() >= *until)
    }

    /// Counts `count` events of kind `E` left unbuilt because [`DomainEvents::heard`] said
    /// nobody listens.
    pub fn unheard<E: BusMessage>(&self, count: usize) {
        if count == 0 {
            return;
        }
        metrics::counter!("bus_domain_events_total", "event" => E::KIND, "outcome" => "skipped")
            .increment(count as u64);
    }

    /// Publishes `events` (all of kind `E`) at once, unless nobody listens to that kind.
    pub async fn publish<E: BusMessage + FixedRoute + Routed>(&self, events: &[E]) {
        if events.is_empty() {
            return;
        }
        if !self.heard::<E>() {
            self.unheard::<E>(events.len());
            return;
        }
        let outcomes = join_all(events.iter().map(|event| self.bus.publish_routed(event))).await;
        let (mut published, mut returned, mut failed) = (0u64, 0u64, None::<BusError>);
        for outcome in outcomes {
            match outcome {
                Ok(true) => published += 1,
                Ok(false) => returned += 1,
                Err(error) => failed = Some(error),
            }
        }
        if returned > 0 {
            lock(&self.unheard).insert(E::KIND, Instant::now() + UNHEARD_FOR);
        }
        metrics::counter!("bus_domain_events_total", "event" => E::KIND, "outcome" => "published")
            .increment(published);
        metrics::counter!("bus_domain_events_total", "event" => E::KIND, "outcome" => "returned")
            .increment(returned);
        if let Some(error) = failed {
            tracing::warn!(%error, event = E::KIND, "a domain event was not published");
        }
    }
}
