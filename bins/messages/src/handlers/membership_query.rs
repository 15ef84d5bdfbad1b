//! `conversation.membership.query`: whether a user may join a conversation's room, asked by an
//! edge for `conversation:join` (the edge has no database of its own). Yes for a participant of
//! an open conversation; an unknown conversation is simply "no".

use switchboard::{
    contract::{
        AckError, ConversationId,
        bus::{Membership, MembershipQuery},
    },
    db::Database,
};

use super::unavailable;

pub async fn handle(db: &Database, query: MembershipQuery) -> Result<Membership, AckError> {
    Ok(Membership { member: is_member(db, query.conversation_id, query.user_id.as_str()).await? })
}

/// A participant of an open conversation. An unknown conversation is simply "no".
pub async fn is_member(db: &Database, conversation: ConversationId, user: &str) -> Result<bool, AckError> {
    let (member,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id \
         WHERE p.conversation_id = $1 AND p.user_id = $2 AND c.closed_at IS NULL)",
    )
    .bind(conversation.0)
    .bind(user)
    .fetch_one(db.pool())
    .await
    .map_err(unavailable)?;
    Ok(member)
}
