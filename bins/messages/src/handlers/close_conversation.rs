//! `conversation.close`: a conversation ends for good (an unmatch, asked by the notifier). It is
//! marked closed, and `conversation.closed` (with its participants) tells every edge, which
//! take their sockets out of its room. Asking again is harmless: the edges hear it again.

use switchboard::{
    Bus,
    bus::Durability,
    contract::{
        AckError,
        bus::{CloseConversation, ConversationClosed},
        client::Empty,
    },
    db::Database,
};

use super::unavailable;

/// Closes a conversation for good (an unmatch) and tells every edge, which take their sockets
/// out of its room. Asking again is harmless: the edges hear it again.
#[tracing::instrument(name = "close conversation", skip_all, fields(conversation = %request.conversation_id))]
pub async fn handle(db: &Database, bus: &Bus, request: CloseConversation) -> Result<Empty, AckError> {
    let participants: Vec<(String,)> = sqlx::query_as(
        "WITH closed AS (UPDATE conversations SET closed_at = coalesce(closed_at, now()) WHERE id = $1 RETURNING id) \
         SELECT p.user_id FROM conversation_participants p JOIN closed c ON c.id = p.conversation_id",
    )
    .bind(request.conversation_id.0)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let closed = ConversationClosed {
        conversation_id: request.conversation_id,
        participants: participants.into_iter().filter_map(|(u,)| u.parse().ok()).collect(),
    };
    bus.publish(&closed, Durability::Confirmed).await.map_err(|error| {
        tracing::warn!(%error, "could not announce a closed conversation");
        AckError::unavailable()
    })?;
    Ok(Empty {})
}
