//! Publishes what the state decided ([`Announcement`]s) in the order it was decided, as many at
//! once as were decided while the last ones were on their way (a group commit, with no timer):
//! an idle announcer publishes a lone announcement at once, and a busy one (an edge restarting,
//! thousands of users coming back) pays for a round, not for each user. A round of up to
//! [`AT_ONCE`] announcements costs
//! 1. one statement recording `last_seen` for every user going offline;
//! 2. the domain events (`domain.user.online`/`.offline`), published in the round's order;
//! 3. one `conversation.contacts.query` for every user announced to their contacts;
//! 4. the `user:online`/`user:offline` deliveries, in the round's order, gathered per edge
//!    ([`deliver_all`]): one broker message per edge for all the users of the round it holds.
//!
//! Best effort, as presence events always were: a round whose contacts cannot be learnt tells
//! no contact (introductions, whose audience is known, still go), and says so in the log. The
//! next change of those users tells the truth again.
//!
//! Why one round at a time: a user's announcements must reach a contact in the order they were
//! decided (an `user:offline` overtaken by an older `user:online` would leave the user online
//! on that contact's screen), and publishing a round only after the last one keeps every
//! publish in decision order on the one publisher channel.

use std::{
    collections::{BTreeMap, BTreeSet},
    mem::discriminant,
    sync::Arc,
};

use chrono::{DateTime, SubsecRound, Utc};
use switchboard::{
    backend::deliver_all,
    bus::Durability,
    contract::{
        Room, UserId,
        bus::{ContactsQuery, Deliver},
        domain,
        server::{ServerEvent, UserOffline, UserOnline},
    },
};
use tokio::sync::mpsc;

use crate::{Worker, state::Announcement};

/// Most announcements in one round: bounds the contacts query and its answer (a user's contacts
/// are listed whole).
pub const AT_ONCE: usize = 256;
// A round's users are asked for in one contacts query.
const _: () = assert!(AT_ONCE <= ContactsQuery::MAX_USERS);

/// Publishes every announcement decided, round by round, until the state's sender is gone.
pub(crate) async fn run(worker: Arc<Worker>, mut decided: mpsc::UnboundedReceiver<Announcement>) {
    let mut round = Vec::with_capacity(AT_ONCE);
    while decided.recv_many(&mut round, AT_ONCE).await > 0 {
        metrics::histogram!("presence_announcement_round_size").record(round.len() as f64);
        publish(&worker, round.drain(..).map(truncated).collect()).await;
    }
}

/// PostgreSQL keeps microseconds: what clients are told must match what is stored.
fn truncated(announcement: Announcement) -> Announcement {
    match announcement {
        Announcement::Online { user, at } => Announcement::Online { user, at: at.trunc_subsecs(6) },
        Announcement::Offline { user, last_seen_at } => {
            Announcement::Offline { user, last_seen_at: last_seen_at.trunc_subsecs(6) }
        }
        Announcement::OnlineTo { user, at, audience } => {
            Announcement::OnlineTo { user, at: at.trunc_subsecs(6), audience }
        }
    }
}

async fn publish(worker: &Worker, round: Vec<Announcement>) {
    store_last_seen(worker, &round).await;
    publish_domain_events(worker, &round).await;

    // Whose contacts are needed: everyone announced to their contacts, once each.
    let asked: BTreeSet<&UserId> = round
        .iter()
        .filter_map(|announcement| match announcement {
            Announcement::Online { user, .. } | Announcement::Offline { user, .. } => Some(user),
            Announcement::OnlineTo { .. } => None,
        })
        .collect();
    let contacts = if asked.is_empty() {
        BTreeMap::new()
    } else {
        // Already logged; the introductions still go.
        worker.contacts(asked.into_iter().cloned().collect()).await.unwrap_or_default()
    };

    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let deliveries: Vec<Deliver> = round
        .iter()
        .filter_map(|announcement| {
            let (label, event, data, audience) = match announcement {
                Announcement::Online { user, .. } => (
                    UserOnline::NAME,
                    UserOnline::NAME,
                    serde_json::to_value(online(announcement)?),
                    contacts.get(user)?,
                ),
                Announcement::Offline { user, .. } => (
                    UserOffline::NAME,
                    UserOffline::NAME,
                    serde_json::to_value(offline(announcement)?),
                    contacts.get(user)?,
                ),
                // The audience is known: new contacts of the user (see `Presence::introduce`).
                Announcement::OnlineTo { user, at, audience } => {
                    let data = serde_json::to_value(UserOnline { user_id: user.clone(), at: *at });
                    ("introduction", UserOnline::NAME, data, audience)
                }
            };
            if audience.is_empty() {
                return None;
            }
            *counts.entry(label).or_default() += 1;
            let rooms = audience.iter().cloned().map(Room::User).collect();
            Some(Deliver::server_event(rooms, event, &data.unwrap_or_default(), None))
        })
        .collect();
    let errors = deliver_all(&worker.bus, deliveries, Durability::Transient).await;
    if let Some(error) = errors.first() {
        tracing::warn!(%error, failed = errors.len(), "presence events were not published");
        return;
    }
    for (label, count) in counts {
        metrics::counter!("presence_announcements_total", "event" => label).increment(count);
    }
}

/// Records when each user going offline in `round` was last seen, in one statement.
async fn store_last_seen(worker: &Worker, round: &[Announcement]) {
    // One row per user (a statement may not update a row twice): the latest time.
    let mut latest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for announcement in round {
        if let Announcement::Offline { user, last_seen_at } = announcement {
            let seen = latest.entry(user.as_str()).or_insert(*last_seen_at);
            *seen = (*seen).max(*last_seen_at);
        }
    }
    if latest.is_empty() {
        return;
    }
    let (users, times): (Vec<&str>, Vec<DateTime<Utc>>) = latest.into_iter().unzip();
    let stored = sqlx::query(
        "INSERT INTO last_seen (user_id, last_seen_at) SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) \
         ON CONFLICT (user_id) DO UPDATE SET last_seen_at = GREATEST(last_seen.last_seen_at, EXCLUDED.last_seen_at)",
    )
    .bind(&users)
    .bind(&times)
    .execute(worker.database.pool())
    .await;
    if let Err(error) = stored {
        tracing::warn!(%error, users = users.len(), "cannot store last_seen");
    }
}

/// `domain.user.online` and `domain.user.offline` for backends, in the round's order: each run
/// of one kind goes together (its publishes start in order on one channel).
async fn publish_domain_events(worker: &Worker, round: &[Announcement]) {
    for run in round.chunk_by(|a, b| discriminant(a) == discriminant(b)) {
        match run.first() {
            Some(Announcement::Online { .. }) => {
                let events: Vec<_> = run.iter().filter_map(online).map(domain::UserOnline).collect();
                worker.domain.publish(&events).await;
            }
            Some(Announcement::Offline { .. }) => {
                let events: Vec<_> = run.iter().filter_map(offline).map(domain::UserOffline).collect();
                worker.domain.publish(&events).await;
            }
            // Introductions tell new contacts something already true: no domain event.
            Some(Announcement::OnlineTo { .. }) | None => {}
        }
    }
}

/// What contacts and backends are told of an [`Announcement::Online`].
fn online(announcement: &Announcement) -> Option<UserOnline> {
    match announcement {
        Announcement::Online { user, at } => Some(UserOnline { user_id: user.clone(), at: *at }),
        _ => None,
    }
}

/// What contacts and backends are told of an [`Announcement::Offline`].
fn offline(announcement: &Announcement) -> Option<UserOffline> {
    match announcement {
        Announcement::Offline { user, last_seen_at } => {
            Some(UserOffline { user_id: user.clone(), last_seen_at: *last_seen_at })
        }
        _ => None,
    }
}
