//! `conversation.create`: a conversation between users, asked for by a backend (the ingress)
//! or by the notifier for a match. A match's conversation is made once per `matchId`, however
//! often it is asked for, and only between that match's users. A creation that stored
//! something is announced on `events.topic` as `conversation.opened` (its participants), from
//! which presence introduces the online participants to each other.

use switchboard::{
    Bus,
    bus::Durability,
    contract::{
        AckError, ConversationId,
        bus::{ConversationCreated, ConversationOpened, CreateConversation},
    },
    db::Database,
};
use uuid::Uuid;

use super::unavailable;

/// Stores a conversation, then tells presence (`conversation.opened`), which introduces the
/// participants who are online to each other. Only a creation that stored something is
/// announced: a match's conversation is asked for twice (by the ingress, which answers with
/// its id, and by the notifier), and its users would otherwise be introduced twice. Losing an
/// announcement (a failed publish, or a crash between the commit and the publish) is a
/// presence event not shown (contacts can still ask with `presence:query`), not a reason to
/// fail a conversation that is stored, so a failed publish is only logged.
#[tracing::instrument(name = "create conversation", skip_all, fields(match_id = ?request.match_id))]
pub async fn handle(
    db: &Database,
    bus: &Bus,
    request: CreateConversation,
) -> Result<ConversationCreated, AckError> {
    request.check().map_err(AckError::invalid)?;
    let mut tx = db.pool().begin().await.map_err(unavailable)?;
    let id = ConversationId::new();
    // A match's conversation is made once, however often the match is replayed. A concurrent
    // insert of the same match makes ours do nothing; the row is then read in a statement of
    // its own, whose snapshot sees the other transaction's commit.
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO conversations (id, match_id) VALUES ($1, $2) ON CONFLICT (match_id) DO NOTHING RETURNING id",
    )
    .bind(id.0)
    .bind(request.match_id.as_ref().map(|m| m.as_str()))
    .fetch_optional(&mut *tx)
    .await
    .map_err(unavailable)?;
    let mut stored = inserted.is_some();
    let (id,) = match inserted {
        Some(row) => row,
        None => {
            let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM conversations WHERE match_id = $1")
                .bind(request.match_id.as_ref().map(|m| m.as_str()))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            // The match's conversation is between the match's two users. The same `matchId`
            // naming other users is a mistake of the caller's, refused here rather than let
            // it add a stranger to that conversation.
            let existing: Vec<String> = sqlx::query_scalar(
                "SELECT user_id FROM conversation_participants WHERE conversation_id = $1 ORDER BY user_id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            let mut asked: Vec<String> = request.participants.iter().map(|u| u.to_string()).collect();
            asked.sort();
            if existing != asked {
                return Err(AckError::invalid("matchId already names a match between other users"));
            }
            (id,)
        }
    };
    let joined = sqlx::query(
        "INSERT INTO conversation_participants (conversation_id, user_id) SELECT $1, u FROM UNNEST($2::text[]) AS u \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(request.participants.iter().map(|u| u.to_string()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    stored |= joined.rows_affected() > 0;
    tx.commit().await.map_err(unavailable)?;
    let conversation_id = ConversationId(id);
    if !stored {
        return Ok(ConversationCreated { conversation_id });
    }
    let opened = ConversationOpened { conversation_id, participants: request.participants };
    if let Err(error) = bus.publish(&opened, Durability::Confirmed).await {
        tracing::warn!(%error, "could not announce a new conversation to presence");
    }
    Ok(ConversationCreated { conversation_id })
}
