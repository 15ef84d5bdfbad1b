//! `match.remove`: the match is over. Handled after its match (one queue, one active consumer):
//! the conversation is closed by its owner (which tells every edge to take the sockets out of
//! its room and forgets the contacts), then the match is marked removed, then both users get
//! `match:removed`. Each step can be redone: a redelivery after a crash closes again (harmless)
//! and goes on.

use switchboard::contract::{
    ConversationId,
    bus::{CloseConversation, Unmatch},
    domain,
    server::{MatchRemoved, ServerEvent},
};

use crate::{
    Failure, Notifier,
    matches::{parse, row, send},
};

#[tracing::instrument(name = "match removed", skip_all, fields(match_id = %unmatch.match_id))]
pub async fn handle(notifier: &Notifier, unmatch: Unmatch) -> Result<(), Failure> {
    let match_id = unmatch.match_id;
    // Unknown or already removed: nothing to do.
    let Some(stored) = row(notifier, &match_id).await? else { return Ok(()) };
    if stored.removed_at.is_some() {
        return Ok(());
    }
    // Close first: if we die after this, the redelivery closes again (harmless) and goes on.
    if let Some(id) = stored.conversation_id {
        let close = CloseConversation { conversation_id: ConversationId(id) };
        notifier.bus.request(&close, notifier.timeout).await?;
        // Before it is marked removed: a redelivery publishes it again rather than never.
        let removed = MatchRemoved { match_id: match_id.clone(), conversation_id: ConversationId(id) };
        notifier.domain.publish(&[domain::MatchRemoved(removed)]).await;
    }
    sqlx::query("UPDATE matches SET removed_at = now() WHERE match_id = $1 AND removed_at IS NULL")
        .bind(match_id.as_str())
        .execute(notifier.database.pool())
        .await?;
    if let Some(id) = stored.conversation_id {
        let removed = MatchRemoved { match_id: match_id.clone(), conversation_id: ConversationId(id) };
        for user in [parse(&stored.user_a)?, parse(&stored.user_b)?] {
            send(notifier, &user, MatchRemoved::NAME, &removed).await?;
        }
    }
    metrics::counter!("notifier_unmatches_total").increment(1);
    Ok(())
}
