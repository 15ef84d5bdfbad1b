//! `conversation.contacts.query`: a user's contacts, everyone who shares an open conversation
//! with them. Asked by presence, which tells only a user's contacts when the user comes online
//! or goes offline, and answers `presence:query` about contacts only.

use switchboard::{
    contract::{
        AckError,
        bus::{Contacts, ContactsQuery},
    },
    db::Database,
};

use super::unavailable;

/// Everyone who shares an open conversation with the user.
#[tracing::instrument(name = "contacts", skip_all, fields(user = %query.user_id))]
pub async fn handle(db: &Database, query: ContactsQuery) -> Result<Contacts, AckError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT other.user_id FROM conversation_participants mine \
         JOIN conversations c ON c.id = mine.conversation_id AND c.closed_at IS NULL \
         JOIN conversation_participants other ON other.conversation_id = mine.conversation_id \
         WHERE mine.user_id = $1 AND other.user_id <> $1",
    )
    // Planned with the actual user every time: a join whose best plan depends on the tables'
    // size (see `switchboard::db` on generic plans).
    .persistent(false)
    .bind(query.user_id.as_str())
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    Ok(Contacts { user_ids: rows.into_iter().filter_map(|(u,)| u.parse().ok()).collect() })
}
