//! `conversation.contacts.query`: the contacts of some users, everyone who shares an open
//! conversation with each of them. Asked by presence, which tells only a user's contacts when
//! the user comes online or goes offline (one query for all the announcements it decided while
//! publishing the last ones), and answers `presence:query` about contacts only.

use std::collections::BTreeMap;

use switchboard::{
    contract::{
        AckError, UserId,
        bus::{Contacts, ContactsQuery},
    },
    db::Database,
};

use super::unavailable;

/// Everyone who shares an open conversation with each user asked about, in one statement.
#[tracing::instrument(name = "contacts", skip_all, fields(users = query.user_ids.len()))]
pub async fn handle(db: &Database, query: ContactsQuery) -> Result<Contacts, AckError> {
    if query.user_ids.len() > ContactsQuery::MAX_USERS {
        return Err(AckError::invalid(format!(
            "at most {} users per contacts query, not {}",
            ContactsQuery::MAX_USERS,
            query.user_ids.len()
        )));
    }
    let asked: Vec<&str> = query.user_ids.iter().map(UserId::as_str).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT mine.user_id, other.user_id FROM conversation_participants mine \
         JOIN conversations c ON c.id = mine.conversation_id AND c.closed_at IS NULL \
         JOIN conversation_participants other ON other.conversation_id = mine.conversation_id \
         WHERE mine.user_id = ANY($1) AND other.user_id <> mine.user_id",
    )
    // Planned with the actual users every time: a join whose best plan depends on the tables'
    // size (see `switchboard::db` on generic plans).
    .persistent(false)
    .bind(&asked)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    // Every user asked about is answered, with no contacts at least.
    let mut contacts: BTreeMap<UserId, Vec<UserId>> =
        query.user_ids.into_iter().map(|user| (user, Vec::new())).collect();
    for (user, other) in rows {
        if let (Ok(user), Ok(other)) = (user.parse::<UserId>(), other.parse()) {
            contacts.entry(user).or_default().push(other);
        }
    }
    Ok(Contacts { contacts })
}
