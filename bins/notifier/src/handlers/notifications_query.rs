//! `notifications:list`: a user's own notifications, newest first (all, or the unread only),
//! at most 200 a page. Answered by any copy; a database that does not answer is `unavailable`.

use switchboard::contract::{AckError, bus::NotificationsQuery, client::NotificationsPage};

use super::unavailable;
use crate::{
    Notifier,
    inbox::{COLUMNS, NotificationRow},
};

#[tracing::instrument(name = "notifications:list", skip_all, fields(user = %query.user_id))]
pub async fn handle(notifier: &Notifier, query: NotificationsQuery) -> Result<NotificationsPage, AckError> {
    let rows: Vec<NotificationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .persistent(false)
    .bind(query.user_id.as_str())
    .bind(query.unread_only)
    .bind(i64::from(query.limit.clamp(1, 200)))
    .fetch_all(notifier.database.pool())
    .await
    .map_err(unavailable)?;
    Ok(NotificationsPage {
        notifications: rows.into_iter().filter_map(NotificationRow::into_event).collect(),
    })
}
