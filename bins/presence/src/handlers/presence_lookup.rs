//! `presence:query` (`presence.query` on the bus): who of the users named is online, and when
//! each was last seen. Only the caller's contacts are answered; a backend's query (no caller) is
//! answered about everyone it names. Answered from a task of its own, so the input keeps
//! flowing while the contacts and `last_seen` are read.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use switchboard::{
    bus::Incoming,
    contract::{
        AckError, UserId,
        bus::PresenceLookup,
        client::{PresenceReply, UserPresence},
    },
};

use crate::Worker;

/// Starts answering `lookup`, the request `incoming` carried.
pub(crate) fn handle(worker: &Arc<Worker>, lookup: PresenceLookup, incoming: &Incoming) {
    let worker = worker.clone();
    let props = incoming.delivery.properties.clone();
    tokio::spawn(async move {
        let answer = lookup_presence(&worker, lookup).await;
        worker.bus.reply::<PresenceLookup>(&props, answer).await;
    });
}

/// `presence:query`: only the caller's contacts are answered; a backend's query (no
/// caller) is answered about everyone it names.
#[tracing::instrument(name = "presence:query", skip_all, fields(users = lookup.user_ids.len()))]
async fn lookup_presence(worker: &Worker, lookup: PresenceLookup) -> Result<PresenceReply, AckError> {
    let asked: Vec<UserId> = match &lookup.user_id {
        Some(caller) => {
            let contacts = worker.contacts(vec![caller.clone()]).await?.remove(caller).unwrap_or_default();
            lookup.user_ids.into_iter().filter(|id| contacts.contains(id)).collect()
        }
        None => lookup.user_ids,
    };
    let names: Vec<String> = asked.iter().map(|u| u.to_string()).collect();
    let seen: BTreeMap<String, DateTime<Utc>> =
        sqlx::query_as("SELECT user_id, last_seen_at FROM last_seen WHERE user_id = ANY($1)")
            .bind(&names)
            .fetch_all(worker.database.pool())
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot read last_seen");
                AckError::unavailable()
            })?
            .into_iter()
            .collect();
    let state = worker.state();
    let users = asked
        .into_iter()
        .map(|user| {
            let presence =
                UserPresence { online: state.online(&user), last_seen_at: seen.get(user.as_str()).copied() };
            (user, presence)
        })
        .collect();
    Ok(PresenceReply { users })
}
