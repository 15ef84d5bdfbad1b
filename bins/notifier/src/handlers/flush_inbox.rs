//! `notification.flush`: a socket of the user connected (its edge asks once the client has been
//! told it is connected). Every undelivered notification of the user is pushed, oldest first,
//! in pages of 500 (one message per page), all of them. Nothing is marked delivered
//! here: only an edge that emitted one does that
//! ([`notification_delivered`](super::notification_delivered)), so delivery is at least once and
//! the client drops a repeated `id` (see the crate docs).

use chrono::{DateTime, Utc};
use switchboard::{
    backend::deliver_all,
    bus::Durability,
    contract::{
        UserId,
        bus::{Deliver, FlushInbox},
    },
};
use uuid::Uuid;

use crate::{
    Failure, Notifier,
    inbox::{COLUMNS, NotificationRow, delivery},
};

/// `notification.flush`: a socket of the user connected; push everything waiting in their
/// inbox, oldest first.
pub async fn handle(notifier: &Notifier, flush: FlushInbox) -> Result<(), Failure> {
    // Most connects find nothing waiting: they are answered by one query for many users.
    if notifier.waiting.any(&flush.user_id).await? {
        flush_inbox(notifier, &flush.user_id).await?;
    }
    Ok(())
}

/// How many notifications one page of a flush reads (and publishes as one batch).
const FLUSH_PAGE: i64 = 500;

/// Pushes every undelivered notification of `user`, in pages: nothing is marked here (only an
/// edge that emitted one does that), so the pages follow `(created_at, id)` instead of
/// re-reading what is still undelivered. A failure redoes the whole flush (the client drops a
/// repeated `id`).
#[tracing::instrument(name = "flush inbox", skip_all, fields(%user))]
async fn flush_inbox(notifier: &Notifier, user: &UserId) -> Result<(), Failure> {
    let mut after: Option<(DateTime<Utc>, Uuid)> = None;
    loop {
        let page: Vec<NotificationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND delivered_at IS NULL \
             AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) ORDER BY created_at, id LIMIT $4"
        )))
        // Ranges whose best plan depends on the table's size are planned with the actual values
        // (see `switchboard::db` on generic plans).
        .persistent(false)
        .bind(user.as_str())
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id).unwrap_or_default())
        .bind(FLUSH_PAGE)
        .fetch_all(notifier.database.pool())
        .await?;
        let full = page.len() as i64 == FLUSH_PAGE;
        after = page.last().map(|row| (row.created_at, row.id));
        let deliveries: Vec<Deliver> =
            page.into_iter().filter_map(NotificationRow::into_event).map(|n| delivery(&n)).collect();
        let pushed = deliveries.len();
        // One message per page: the edges hand each item to the user's sockets.
        if let Some(error) = deliver_all(&notifier.bus, deliveries, Durability::Confirmed).await.pop() {
            return Err(error.into());
        }
        metrics::counter!("notifier_pushed_total").increment(pushed as u64);
        if !full {
            return Ok(());
        }
    }
}
