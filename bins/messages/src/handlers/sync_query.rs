//! `messages.sync.query`: a page of a conversation's messages in `seq` order after a given
//! `seq`, for a client's `messages:sync` (a participant of the open conversation only) or a
//! backend's history (any conversation that exists). Receivers that missed a `message:new`
//! catch up here.

use chrono::{DateTime, Utc};
use switchboard::{
    contract::{
        AckError, ConversationId, MessageId, bus::SyncQuery, client::MessagesPage, server::MessageNew,
    },
    db::Database,
};
use uuid::Uuid;

use super::{membership_query::is_member, unavailable};

/// A page of a conversation's messages: for a participant of the open conversation, or for a
/// backend (no `user_id`), of any conversation that exists.
#[tracing::instrument(name = "messages:sync", skip_all, fields(conversation = %query.conversation_id, user = ?query.user_id))]
pub async fn handle(db: &Database, query: SyncQuery) -> Result<MessagesPage, AckError> {
    match &query.user_id {
        Some(user) if !is_member(db, query.conversation_id, user.as_str()).await? => {
            return Err(AckError::forbidden());
        }
        Some(_) => {}
        None if !exists(db, query.conversation_id).await? => {
            return Err(AckError::not_found("no such conversation"));
        }
        None => {}
    }
    let limit = i64::from(query.limit.clamp(1, 200));
    let after = i64::try_from(query.after_seq).unwrap_or(i64::MAX);
    // One row more than the page tells whether there is more.
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT id, conversation_id, seq, sender_id, content, client_message_id, created_at \
         FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    // A range whose best plan depends on the table's size: planned with the actual values.
    .persistent(false)
    .bind(query.conversation_id.0)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let has_more = rows.len() as i64 > limit;
    let messages = rows.into_iter().take(limit as usize).map(StoredRow::into_message).collect();
    Ok(MessagesPage { messages, has_more })
}

/// Whether the conversation was ever created (open or closed).
async fn exists(db: &Database, conversation: ConversationId) -> Result<bool, AckError> {
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)")
        .bind(conversation.0)
        .fetch_one(db.pool())
        .await
        .map_err(unavailable)?;
    Ok(exists)
}

/// A row of `messages`, as every query of this crate reads it.
#[derive(sqlx::FromRow)]
pub struct StoredRow {
    id: Uuid,
    conversation_id: Uuid,
    seq: i64,
    sender_id: String,
    content: String,
    client_message_id: Option<String>,
    created_at: DateTime<Utc>,
}

impl StoredRow {
    pub fn into_message(self) -> MessageNew {
        MessageNew {
            id: MessageId(self.id),
            conversation_id: ConversationId(self.conversation_id),
            sender_id: self.sender_id.parse().unwrap_or_else(|_| "unknown".parse().expect("valid")),
            content: self.content,
            seq: self.seq,
            created_at: self.created_at,
            client_message_id: self.client_message_id.and_then(|c| c.try_into().ok()),
        }
    }
}
