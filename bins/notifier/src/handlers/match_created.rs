//! `match.created`: two users matched. The notifier gives them a conversation, tells both, and
//! keeps a notification of it in each one's inbox.
//!
//! A match: (1) its row, once per `matchId` (a removed match is never brought back); (2) its
//! conversation, made by the owner of conversations once per `matchId`; (3) one notification of
//! type `match` per user, once per `(matchId, user)`; (4) `match:new` and `notification:new` to
//! both; (5) `announced_at`, so a replay sends nothing again. A copy that dies between two
//! steps leaves the message unacknowledged, and the redelivery redoes only what is missing.

use chrono::{SubsecRound, Utc};
use switchboard::{
    backend,
    contract::{
        ConversationId, NotificationId, UserId,
        bus::{CreateConversation, CreateNotification, MatchCreated, NotificationData},
        domain,
        server::{MatchNew, MatchNotificationData, ServerEvent},
    },
};

use crate::{
    Failure, Notifier, inbox,
    matches::{parse, row, send},
};

#[tracing::instrument(name = "match created", skip_all, fields(match_id = %created.match_id))]
pub async fn handle(notifier: &Notifier, created: MatchCreated) -> Result<(), Failure> {
    let [first, second] = created.user_ids;
    if first == second {
        tracing::warn!(match_id = %created.match_id, "dropping a match of a user with themselves");
        return Ok(());
    }
    let (a, b) = if first < second { (first, second) } else { (second, first) };
    let at = created.created_at.unwrap_or_else(Utc::now).trunc_subsecs(6);
    sqlx::query(
        "INSERT INTO matches (match_id, user_a, user_b, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(created.match_id.as_str())
    .bind(a.as_str())
    .bind(b.as_str())
    .bind(at)
    .execute(notifier.database.pool())
    .await?;
    let Some(stored) = row(notifier, &created.match_id).await? else {
        return Err(Failure::Retry("the match row vanished".into()));
    };
    if stored.removed_at.is_some() || stored.announced_at.is_some() {
        return Ok(());
    }
    let users: [UserId; 2] = [parse(&stored.user_a)?, parse(&stored.user_b)?];
    let conversation = match stored.conversation_id {
        Some(id) => ConversationId(id),
        None => {
            let create =
                CreateConversation { participants: users.to_vec(), match_id: Some(created.match_id.clone()) };
            let made = backend::create_conversation(&notifier.bus, &create, notifier.timeout).await?;
            sqlx::query("UPDATE matches SET conversation_id = $2 WHERE match_id = $1")
                .bind(created.match_id.as_str())
                .bind(made.0)
                .execute(notifier.database.pool())
                .await?;
            made
        }
    };
    for (me, other) in [(&users[0], &users[1]), (&users[1], &users[0])] {
        let data = MatchNotificationData {
            match_id: created.match_id.clone(),
            conversation_id: conversation,
            other_user_id: other.clone(),
        };
        let create = CreateNotification {
            id: NotificationId::new(),
            user_id: me.clone(),
            kind: text("match")?,
            title: text("It's a match!")?,
            message: text(&format!("You and {other} like each other."))?,
            data: serde_json::to_value(data)
                .ok()
                .map(NotificationData::try_from)
                .transpose()
                .map_err(Failure::Refuse)?,
        };
        let notification = inbox::store(notifier, &create, Some(created.match_id.as_str())).await?;
        let new = MatchNew {
            match_id: created.match_id.clone(),
            user_id: other.clone(),
            conversation_id: conversation,
            created_at: stored.created_at,
        };
        send(notifier, me, MatchNew::NAME, &new).await?;
        inbox::push(notifier, &notification).await?;
    }
    // Before it is marked announced: a redelivery publishes it again rather than never.
    let event = domain::MatchCreated {
        match_id: created.match_id.clone(),
        conversation_id: conversation,
        user_ids: users.clone(),
        created_at: stored.created_at,
    };
    notifier.domain.publish(&[event]).await;
    sqlx::query("UPDATE matches SET announced_at = now() WHERE match_id = $1")
        .bind(created.match_id.as_str())
        .execute(notifier.database.pool())
        .await?;
    metrics::counter!("notifier_matches_total").increment(1);
    Ok(())
}

/// One of the notification texts this module writes, checked like any other.
fn text<T: std::str::FromStr<Err = String>>(raw: &str) -> Result<T, Failure> {
    raw.parse().map_err(Failure::Refuse)
}
