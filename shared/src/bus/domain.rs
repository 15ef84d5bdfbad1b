//! Publishing domain events (`contract::domain`) only while some backend listens.
//!
//! A process cannot ask the broker over AMQP which queues are bound to a key, so it lets the
//! broker's routing answer: an event is published mandatory and confirmed, and when the broker
//! returns it (no queue is bound to its key) that key is taken as unheard for [`UNHEARD_FOR`],
//! during which nothing of it is published. A key not known to be heard (at start, or once
//! that second is over) is probed with one event of a batch, and the rest follow only if a
//! queue took it. Nobody listening therefore costs one publish per key per second per process,
//! whatever the load; a backend that binds a queue receives everything published from at most
//! [`UNHEARD_FOR`] after its binding on.
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
    /// Per kind, what the last publish learnt; a kind not here was never published.
    heard: Arc<Mutex<HashMap<&'static str, Heard>>>,
}

/// What the broker said about a kind's key.
#[derive(Clone, Copy)]
enum Heard {
    /// A queue took the last one.
    Yes,
    /// It was returned: nothing is published until then.
    NoUntil(Instant),
}

impl DomainEvents {
    pub fn new(bus: Bus) -> Self {
        Self { bus, heard: Arc::default() }
    }

    /// Whether events of kind `E` are worth building now: false while nobody listens to them.
    pub fn heard<E: BusMessage + FixedRoute>(&self) -> bool {
        !matches!(lock(&self.heard).get(E::KIND), Some(Heard::NoUntil(until)) if Instant::now() < *until)
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

    /// Publishes `events` (all of kind `E`) at once while the kind is heard; probes with the
    /// first alone while that is not known; nothing while nobody listens.
    pub async fn publish<E: BusMessage + FixedRoute + Routed>(&self, events: &[E]) {
        let known = lock(&self.heard).get(E::KIND).copied();
        let rest = match known {
            _ if events.is_empty() => return,
            Some(Heard::NoUntil(until)) if Instant::now() < until => {
                self.unheard::<E>(events.len());
                return;
            }
            Some(Heard::Yes) => events,
            // Not known: one event asks the broker, the others wait for its answer.
            _ => match self.publish_all(&events[..1]).await {
                Some(Heard::NoUntil(_)) => {
                    self.unheard::<E>(events.len() - 1);
                    return;
                }
                // Taken, or failed (the broker said nothing: the others are tried, not dropped).
                _ => &events[1..],
            },
        };
        self.publish_all(rest).await;
    }

    /// Publishes `events` together and records what the broker said of the kind: `None` when
    /// it said nothing (every publish failed, or none was made).
    async fn publish_all<E: BusMessage + FixedRoute + Routed>(&self, events: &[E]) -> Option<Heard> {
        if events.is_empty() {
            return None;
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
        let heard = match (published, returned) {
            (_, 1..) => Some(Heard::NoUntil(Instant::now() + UNHEARD_FOR)),
            (1.., 0) => Some(Heard::Yes),
            (0, 0) => None,
        };
        if let Some(heard) = heard {
            lock(&self.heard).insert(E::KIND, heard);
        }
        metrics::counter!("bus_domain_events_total", "event" => E::KIND, "outcome" => "published")
            .increment(published);
        metrics::counter!("bus_domain_events_total", "event" => E::KIND, "outcome" => "returned")
            .increment(returned);
        if let Some(error) = failed {
            tracing::warn!(%error, event = E::KIND, "a domain event was not published");
        }
        heard
    }
}
