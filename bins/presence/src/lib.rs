//! `switchboard-presence` aggregates every edge's connections into online/offline per user and
//! answers presence queries (docs/reference.md, Processes, Client events and Server events).
//!
//! # How it works
//!
//! **Input.** Each edge sends, in order on one channel, a [`PresenceChange`] when its first
//! socket of a user opens or its last one closes (per edge and user, not per socket: a second
//! tab costs nothing; several at once as one [`PresenceChanges`]), and an [`EdgeReport`] of
//! all its users every `PRESENCE_REPORT_INTERVAL_MS`, never ahead of a change older than
//! itself; at shutdown it says [`EdgeStopping`]. They all go to the
//! durable queue `presence.events`, consumed in order by one copy at a time. That queue also
//! carries the `presence:query` requests and the conversations opened (below); each kind is
//! handled in a module named after it ([`handlers`]).
//!
//! **State** ([`state`]): per user, the set of edges holding a socket; per edge, its users and
//! when it last reported. A user is online while that set is not empty; `user:online` goes out
//! when it stops being empty, `user:offline` when it has been empty for
//! `PRESENCE_OFFLINE_GRACE_MS` (a reload shows nothing). A report replaces the edge's set, so a
//! lost change heals at the next report. An edge silent for three intervals is taken for dead
//! (SIGKILL): its users lose it, and go offline after the grace period (within 30 s with the
//! default 5 s interval). A broker blip shorter than that causes nothing; when our own consumer
//! restarts, every edge's clock starts again, so our gap is not read as the edges' silence.
//!
//! **Restarts and copies.** The queue has RabbitMQ's single-active-consumer: one copy works,
//! the others stand by and take over when it goes. A copy that starts or takes over knows
//! nothing, so for two report intervals (the warm-up, until every live edge has reported)
//! nobody is judged offline on partial knowledge, and the users the reports list are taken as
//! known to their contacts (no event: they were online before). The broker does not tell a
//! standby that it took over: its first input after a silence longer than a report interval
//! is the sign (`Presence::heard`), and starts the warm-up again. During the warm-up:
//! - an edge's change "first socket of a user opened" is news, announced at once (a user who
//!   comes online right after the system starts is announced promptly). Should the user also
//!   be online through an edge that has not reported yet, contacts hear `user:online` twice:
//!   a repeat of something true, never a false event;
//! - an edge's change "last socket closed" for a user we never heard of is taken as a user
//!   whose contacts were told "online" by the copy before us: they go offline after the grace
//!   period (once the warm-up is over) unless a report shows them on another edge, so a
//!   failover does not leave them "online" for good.
//!
//! **New contacts.** When a conversation is created, its owner publishes `conversation.opened`
//! with the participants (on `events.topic`, bound to this queue, so it is handled in order
//! with the changes). Each participant who is online is announced to the others with
//! `user:online` (addressed to them only): two online users who get a conversation (a match)
//! learn each other's presence at once instead of at their next reconnect. The owner announces
//! only a creation that stored something, so a replay (a match's conversation is asked for by
//! the ingress and again by the notifier) introduces no one twice.
//!
//! **Audience.** The contacts of a user (who share an open conversation) come from the owner
//! of conversations over the bus. An announcement is published once on `user.direct`,
//! addressed to every contact's user room (the `CC` header): only edges where a contact has a
//! socket receive it, so the cost of a change is proportional to that user's contacts, never
//! to the number of connected users. Per-contact routing was chosen over `presence.fanout`
//! because a fanout would make every edge receive every change and filter it against contact
//! lists it does not have.
//!
//! **Order and rounds.** Whatever decides (the input, or the clock ending a grace period)
//! hands its announcements to the [`announcer`] under the state's lock, so they are published
//! in the order they were decided. The announcer publishes in rounds: what was decided while
//! the last round was on its way goes together, with one contacts query, one `last_seen`
//! statement and a few deliveries gathered per edge, so it keeps up when thousands of users
//! come and go at once (an edge restarting) instead of falling seconds behind.
//!
//! [`PresenceChange`]: switchboard::contract::bus::PresenceChange
//! [`PresenceChanges`]: switchboard::contract::bus::PresenceChanges
//! [`EdgeReport`]: switchboard::contract::bus::EdgeReport
//! [`EdgeStopping`]: switchboard::contract::bus::EdgeStopping

#![forbid(unsafe_code)]

pub mod announcer;
pub mod handlers;
pub mod state;
pub mod telemetry;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use switchboard::{
    Bus, Config, Role, Shutdown,
    bus::{ConsumeOptions, DomainEvents, queues},
    contract::{
        AckError, UserId,
        bus::{Contacts, ContactsQuery},
    },
    db::Database,
    service::Process,
};
use tokio::{sync::mpsc, time::Instant};

use crate::state::{Announcement, Presence};

/// How often the clock looks at grace periods and silent edges.
const TICK: Duration = Duration::from_millis(200);

struct Worker {
    bus: Bus,
    /// `domain.user.online` and `domain.user.offline` for backends.
    domain: DomainEvents,
    database: Database,
    state: Mutex<Presence>,
    announce: mpsc::UnboundedSender<Announcement>,
    ack_timeout: Duration,
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    telemetry::describe();
    let process = Process::start(Role::Presence, config, shutdown, true).await?;
    let database = process.database.clone().expect("presence has a database");
    let interval = Duration::from_millis(process.config.presence_report_interval_ms);
    let grace = Duration::from_millis(process.config.presence_offline_grace_ms);
    let (announce, announcements) = mpsc::unbounded_channel();
    let worker = Arc::new(Worker {
        bus: process.bus.clone(),
        domain: DomainEvents::new(process.bus.clone()),
        database,
        state: Mutex::new(
            Presence::new(grace, interval * 2 + Duration::from_secs(1), Instant::now())
                .with_gap(interval + Duration::from_secs(1)),
        ),
        announce,
        ack_timeout: process.config.ack_timeout(),
    });
    tokio::spawn(announcer::run(worker.clone(), announcements));
    tokio::spawn(clock(worker.clone(), process.shutdown.clone()));

    let resumed = worker.clone();
    let options = ConsumeOptions {
        on_start: Some(Arc::new(move || resumed.state().resume(Instant::now()))),
        ..ConsumeOptions::ordered()
    };
    let handler = worker.clone();
    process.bus.consume(queues::presence_events(), options, move |incoming| {
        let worker = handler.clone();
        async move { handlers::presence_input(&worker, incoming) }
    });
    process.serve(axum::Router::new()).await
}

impl Worker {
    fn state(&self) -> std::sync::MutexGuard<'_, Presence> {
        switchboard::sync::lock(&self.state)
    }

    /// Applies a decision to the state and hands what it announces to the announcer, under
    /// one lock: announcements are published in the order they were decided, whichever task
    /// decided them. (Handing them over after unlocking would let the input's `user:online`
    /// for a user who just came back overtake the clock's `user:offline` decided just before
    /// it, leaving the user offline on their contacts' screens.)
    fn decide(&self, decision: impl FnOnce(&mut Presence) -> Vec<Announcement>) {
        let mut state = self.state();
        for announcement in decision(&mut state) {
            let _ = self.announce.send(announcement);
        }
    }

    /// Who shares an open conversation with each of `users` (at most a round's worth, see
    /// [`announcer::AT_ONCE`]), asked of the owner of conversations in one request.
    #[tracing::instrument(name = "contacts", skip_all, fields(users = users.len()))]
    async fn contacts(&self, users: Vec<UserId>) -> Result<BTreeMap<UserId, Vec<UserId>>, AckError> {
        let query = ContactsQuery { user_ids: users };
        let answer: Contacts = self.bus.request(&query, self.ack_timeout).await.map_err(|error| {
            tracing::warn!(%error, "cannot learn users' contacts");
            AckError::unavailable()
        })?;
        Ok(answer.contacts)
    }
}

/// Ends grace periods and expires silent edges.
async fn clock(worker: Arc<Worker>, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let now = Instant::now();
        worker.decide(|state| {
            metrics::gauge!("presence_warm").set(if state.is_warm(now) { 1.0 } else { 0.0 });
            state.tick(now)
        });
    }
}
