//! `switchboard-notifier` owns matches and notifications: it turns `match.created` into a
//! conversation and notifications, delivers them, and keeps them for users who are offline
//! (contract sections 1, 5 and 6).
//!
//! # How it works
//!
//! **Queues.** Matches and unmatches share the durable queue `notifier.matches` (one active
//! consumer, so an unmatch is handled after its match); notifications to create go to
//! `notifier.notifications`. Every process declares both at every connection, so with zero
//! notifiers running nothing is lost: the work waits in the queues and is done when a copy
//! starts. A delivery is acknowledged only once its work is complete, so a copy killed midway
//! leaves the message to be redone, and every step is idempotent: the match row is keyed by
//! `matchId`, the conversation is created by the owner of conversations once per `matchId`,
//! the notifications are unique per `(matchId, user)`.
//!
//! **Inbox.** A notification is stored first, then delivered as `notification:new` through
//! `user.direct`, published as mandatory: if no edge had a socket of the user, the broker
//! returns it, and it stays undelivered (`delivered_at` null). When the user next connects,
//! the edge's presence change (`presence.change`, which this worker also receives, on
//! `notifier.inbox`) makes it push every undelivered notification. We chose the presence
//! change over a request from the edge at connect because it costs the connect path nothing
//! and the change is already on the bus; delivery is at least once, and `id` lets the client
//! drop a repeat.
//!
//! **Unmatch.** The conversation is closed by its owner (which tells every edge to take the
//! sockets out of its room and forgets the contacts), then the match is marked removed, then
//! both users get `match:removed`.

#![forbid(unsafe_code)]

pub mod inbox;
pub mod matches;

use std::{sync::Arc, time::Duration};

use switchboard::{
    Bus, Config, Role, Shutdown,
    bus::{ConsumeOptions, Outcome, Poison, queues},
    db::Database,
    service::Process,
};

/// Why a step of a handler failed, and so what becomes of its message.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The database, the broker or the owner of conversations is away: the message is tried
    /// again in place.
    #[error("{0}")]
    Retry(String),
    /// The message's data is refused for good (the database rejects a value, a request is
    /// answered `invalid`): trying again would fail the same way, so the message is parked in
    /// the dead-letter queue and the queue goes on.
    #[error("{0}")]
    Refuse(String),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        if switchboard::db::is_transient(&error) {
            Failure::Retry(error.to_string())
        } else {
            Failure::Refuse(error.to_string())
        }
    }
}

impl From<switchboard::bus::BusError> for Failure {
    fn from(error: switchboard::bus::BusError) -> Self {
        Failure::Retry(error.to_string())
    }
}

impl From<switchboard::bus::RequestError> for Failure {
    fn from(error: switchboard::bus::RequestError) -> Self {
        match error {
            switchboard::bus::RequestError::Refused(refusal)
                if refusal.code == switchboard::contract::ErrorCode::Invalid =>
            {
                Failure::Refuse(refusal.message)
            }
            other => Failure::Retry(other.to_string()),
        }
    }
}

impl Failure {
    /// What becomes of the message whose handling failed this way.
    pub fn outcome(self, what: &str) -> Outcome {
        match self {
            Failure::Retry(error) => {
                tracing::warn!(%error, "{what} could not be handled; retrying");
                Outcome::Requeue
            }
            Failure::Refuse(error) => Outcome::DeadLetter(Poison::refused(error)),
        }
    }
}

/// What the handlers share.
pub struct Notifier {
    pub bus: Bus,
    pub database: Database,
    /// How long to wait for another worker (the owner of conversations).
    pub timeout: Duration,
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let process = Process::start(Role::Notifier, config, shutdown, true).await?;
    let notifier = Arc::new(Notifier {
        bus: process.bus.clone(),
        database: process.database.clone().expect("the notifier has a database"),
        timeout: process.config.ack_timeout(),
    });
    let (starting, shutdown) = (notifier.clone(), process.shutdown.clone());
    tokio::spawn(async move {
        // The handlers need the migrated database: consume only once it is there.
        if starting.database.wait_ready(&shutdown).await {
            start_consumers(&starting);
        }
    });
    process.serve(axum::Router::new()).await
}

fn start_consumers(notifier: &Arc<Notifier>) {
    let worker = notifier.clone();
    notifier.bus.consume(queues::matches(), ConsumeOptions::ordered(), move |incoming| {
        let worker = worker.clone();
        async move { matches::handle(&worker, incoming).await }
    });
    let worker = notifier.clone();
    notifier.bus.consume(queues::notifications(), ConsumeOptions::concurrent(8), move |incoming| {
        let worker = worker.clone();
        async move { inbox::handle_create(&worker, incoming).await }
    });
    let worker = notifier.clone();
    notifier.bus.consume(queues::notifier_inbox(), ConsumeOptions::concurrent(8), move |incoming| {
        let worker = worker.clone();
        async move { inbox::handle_presence(&worker, incoming).await }
    });
    inbox::serve(notifier);
}
