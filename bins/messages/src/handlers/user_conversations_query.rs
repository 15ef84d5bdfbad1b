//! `conversations.query`: every conversation a user takes part in, open or closed, newest
//! first, with its participants, its match and its last `seq`: for backends (the ingress's
//! `GET /api/v1/users/{userId}/conversations`, `switchboard::backend::user_conversations`).

use switchboard::{
    contract::{
        AckError, ConversationId,
        bus::{ConversationSummary, UserConversations, UserConversationsQuery},
    },
    db::Database,
};
use uuid::Uuid;

use super::unavailable;

/// A row of [`handle`]'s query.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    participants: Vec<String>,
    match_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    closed_at: Option<chrono::DateTime<chrono::Utc>>,
    last_seq: i64,
}

/// Every conversation the user takes part in, open or closed, newest first (ids are UUIDv7).
pub async fn handle(db: &Database, query: UserConversationsQuery) -> Result<UserConversations, AckError> {
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT c.id, c.match_id, c.created_at, c.closed_at, c.last_seq, \
           array(SELECT p.user_id FROM conversation_participants p WHERE p.conversation_id = c.id \
                 ORDER BY p.user_id) AS participants \
         FROM conversation_participants mine JOIN conversations c ON c.id = mine.conversation_id \
         WHERE mine.user_id = $1 ORDER BY c.id DESC",
    )
    .bind(query.user_id.as_str())
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let conversations = rows
        .into_iter()
        .map(|row| ConversationSummary {
            conversation_id: ConversationId(row.id),
            // Stored ids were valid ids when they were stored.
            participants: row.participants.into_iter().filter_map(|u| u.parse().ok()).collect(),
            match_id: row.match_id.and_then(|m| m.parse().ok()),
            created_at: row.created_at,
            closed_at: row.closed_at,
            last_seq: row.last_seq,
        })
        .collect();
    Ok(UserConversations { conversations })
}
