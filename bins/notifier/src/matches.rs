//! The `matches` table, one row per `matchId`, as both match handlers read it
//! ([`match_created`](crate::handlers::match_created) writes it,
//! [`unmatch`](crate::handlers::unmatch) marks it removed), and how they tell a user.

use chrono::{DateTime, Utc};
use switchboard::{
    backend::deliver,
    bus::Durability,
    contract::{MatchId, Room, UserId, bus::Deliver},
};
use uuid::Uuid;

use crate::{Failure, Notifier};

/// A row of `matches`, as the match handlers read it.
#[derive(sqlx::FromRow)]
pub struct MatchRow {
    pub user_a: String,
    pub user_b: String,
    pub conversation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub announced_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
}

/// The match's row, if it was ever stored.
pub async fn row(notifier: &Notifier, id: &MatchId) -> Result<Option<MatchRow>, Failure> {
    Ok(sqlx::query_as(
        "SELECT user_a, user_b, conversation_id, created_at, announced_at, removed_at FROM matches WHERE match_id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(notifier.database.pool())
    .await?)
}

/// Sends an event to a user's sockets (not kept when the user has none).
pub async fn send<T: serde::Serialize>(
    notifier: &Notifier,
    user: &UserId,
    event: &'static str,
    body: &T,
) -> Result<(), Failure> {
    let delivery = Deliver::server_event(vec![Room::User(user.clone())], event, body, None);
    Ok(deliver(&notifier.bus, delivery, Durability::Confirmed).await?)
}

/// A user id as stored in a row.
pub fn parse(user: &str) -> Result<UserId, Failure> {
    user.parse().map_err(|e: switchboard::contract::ids::InvalidId| Failure::Refuse(e.0))
}
