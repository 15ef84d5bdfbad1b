//! `notification:read`: a user marks one of their notifications read. Answered by any copy.
//! `domain.notification.read` is published the first time only.

use chrono::{DateTime, Utc};
use switchboard::contract::{AckError, bus::MarkNotificationRead, client::Empty, domain};

use super::unavailable;
use crate::Notifier;

/// Only the recipient may mark a notification; anything else is `forbidden`, whether or not
/// the notification exists.
#[tracing::instrument(name = "notification:read", skip_all, fields(id = %read.id, user = %read.user_id))]
pub async fn handle(notifier: &Notifier, read: MarkNotificationRead) -> Result<Empty, AckError> {
    // Whether the recipient's notification exists, and when it became read if that is now
    // (`domain.notification.read` is published the first time only).
    let (found, newly_read): (bool, Option<DateTime<Utc>>) = sqlx::query_as(
        "WITH target AS (SELECT id, read_at FROM notifications WHERE id = $1 AND user_id = $2 FOR UPDATE), \
         marked AS (UPDATE notifications n SET read_at = now() FROM target \
                    WHERE n.id = target.id AND target.read_at IS NULL RETURNING n.read_at) \
         SELECT EXISTS (SELECT 1 FROM target), (SELECT read_at FROM marked)",
    )
    .bind(read.id.0)
    .bind(read.user_id.as_str())
    .fetch_one(notifier.database.pool())
    .await
    .map_err(unavailable)?;
    if !found {
        return Err(AckError::forbidden());
    }
    if let Some(read_at) = newly_read {
        let event = domain::NotificationRead { notification_id: read.id, user_id: read.user_id, read_at };
        notifier.domain.publish(&[event]).await;
    }
    Ok(Empty {})
}
