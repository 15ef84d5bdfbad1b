//! `switchboard-notifier` owns matches and notifications: it turns `match.created` into a
//! conversation and notifications, delivers them, and keeps them for users who are offline
//! (docs/reference.md, Processes, Server events and Ingress).
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
//! the notifications are unique per `(matchId, user)`. The inbox's `notifier.flush` and
//! `notifier.delivered` are declared the same way. Each kind the queues carry is handled in a
//! module named after it ([`handlers`]).
//!
//! **Inbox** ([`inbox`]). The promise: a notification is delivered at the first connect after its
//! creation (or at once, to a user who is connected), every time, and it counts as delivered
//! only when a socket got it. Three messages keep it:
//! - a notification is stored first (`delivered_at` null), then pushed as `notification:new`
//!   through `user.direct` (confirmed). Whether a queue took it says nothing (a half-open
//!   socket, an edge that dies with it prefetched, the moment after the last disconnect while
//!   the binding is still there), so nothing is marked then;
//! - an edge that emitted a `notification:new` to at least one connected socket of its user
//!   says so with `notification.delivered` (confirmed, queue `notifier.delivered`); that, and
//!   only that, sets `delivered_at`;
//! - every socket that connects makes its edge publish `notification.flush` for its user,
//!   once the client has been told it is connected (confirmed, retried until the broker took
//!   it or the socket is gone; the users asked for while its last request was on its way go
//!   together as one `notification.flushes`), into the durable queue `notifier.flush` with no
//!   expiry, which every process declares: with no notifier running the request waits. The
//!   notifier then
//!   pushes every undelivered notification of the user, oldest first, in pages of 500 (one
//!   message per page), all of them.
//!
//! A notification created just before a connect is therefore either in the flush (stored
//! before the flush read the inbox) or pushed after it (stored later, when the user's binding
//! and connected socket were already there); one whose push reached no socket stays
//! undelivered and the next connect's flush brings it. An edge that emitted but died before
//! its receipt went out makes the next connect bring it again: delivery is at least once (a
//! push and a flush may also both reach the same socket), and `id` lets the client drop a
//! repeat. We chose a request from the edge at connect over the presence change the edge
//! already sends because that one is transient, sent when the binding is made (before the
//! client is connected, so a push it causes can miss the socket), and only for an edge's
//! first socket of the user.
//!
//! **Unmatch** ([`handlers::unmatch`]). The conversation is closed by its owner (which tells
//! every edge to take the sockets out of its room and forgets the contacts), then the match is
//! marked removed, then both users get `match:removed`.

#![forbid(unsafe_code)]

pub mod handlers;
pub mod inbox;
pub mod matches;
pub mod telemetry;
pub mod waiting;

use std::{sync::Arc, time::Duration};

use switchboard::{
    Bus, Config, Role, Shutdown,
    bus::DomainEvents,
    bus::{Outcome, Poison},
    db::Database,
    service::Process,
};

/// Why a step of a handler failed, and so what becomes of its message.
#[derive(Clone, Debug, thiserror::Error)]
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
    /// What a handler's `result` means for its message: acknowledged, or [`Failure::outcome`].
    pub fn settle(result: Result<(), Failure>, what: &str) -> Outcome {
        result.map_or_else(|failure| failure.outcome(what), |()| Outcome::Ack)
    }

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
    /// The match and notification events for backends.
    pub domain: DomainEvents,
    pub database: Database,
    /// How long to wait for another worker (the owner of conversations).
    pub timeout: Duration,
    /// Whether a user has anything waiting, asked by many flushes at once.
    pub waiting: waiting::Waiting,
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    telemetry::describe();
    let process = Process::start(Role::Notifier, config, shutdown, true).await?;
    let notifier = Arc::new(Notifier {
        bus: process.bus.clone(),
        domain: DomainEvents::new(process.bus.clone()),
        database: process.database.clone().expect("the notifier has a database"),
        timeout: process.config.ack_timeout(),
        waiting: waiting::Waiting::start(process.database.clone().expect("the notifier has a database")),
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
    handlers::consume(notifier);
    tokio::spawn(retire_inbox_queue(notifier.bus.clone()));
}

/// Deletes `notifier.inbox`, where earlier versions took the edges' presence changes as the
/// signal to flush an inbox: nothing consumes it any more, and it would keep a minute of every
/// presence change. Only when unused, so a copy of an earlier version that still reads it
/// during a rolling update keeps it.
async fn retire_inbox_queue(bus: switchboard::Bus) {
    if !bus.wait_ready().await {
        return;
    }
    let deleted = async {
        let channel = bus.channel().await?;
        let options = lapin::options::QueueDeleteOptions { if_unused: true, ..Default::default() };
        channel.queue_delete("notifier.inbox".into(), options).await?;
        let _ = channel.close(200, "done".into()).await;
        Ok::<_, switchboard::bus::BusError>(())
    };
    if let Err(error) = deleted.await {
        tracing::info!(%error, "kept the retired queue notifier.inbox (an earlier version still reads it?)");
    }
}
