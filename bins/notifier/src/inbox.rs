//! Each user's notification inbox: store, deliver now or at the next connect, list, mark read.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use switchboard::{
    backend::deliver_routed,
    bus::{ConsumeOptions, Incoming, Outcome, queues},
    contract::{
        AckError, NotificationId, Room, UserId,
        bus::{CreateNotification, Deliver, MarkNotificationRead, NotificationsQuery, PresenceChange},
        client::{Empty, NotificationsPage},
        server::{NotificationNew, ServerEvent},
    },
};
use uuid::Uuid;

use crate::{Failure, Notifier};

/// A row of `notifications`, as this crate reads it.
#[derive(sqlx::FromRow)]
pub struct NotificationRow {
    id: Uuid,
    user_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    title: String,
    message: String,
    data: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, user_id, type, title, message, data, created_at, read_at";

impl NotificationRow {
    fn into_event(self) -> Option<NotificationNew> {
        Some(NotificationNew {
            id: NotificationId(self.id),
            kind: self.kind,
            title: self.title,
            message: self.message,
            user_id: self.user_id.parse().ok()?,
            timestamp: self.created_at,
            data: self.data,
            read_at: self.read_at,
        })
    }
}

/// Stores a notification (once per id, or per match and user) and returns it as stored.
pub async fn store(
    notifier: &Notifier,
    create: &CreateNotification,
    match_id: Option<&str>,
) -> Result<NotificationNew, sqlx::Error> {
    let now = Utc::now().trunc_subsecs(6);
    let inserted: Option<NotificationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO notifications (id, user_id, type, title, message, data, created_at, match_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(create.id.0)
    .bind(create.user_id.as_str())
    .bind(create.kind.as_str())
    .bind(create.title.as_str())
    .bind(create.message.as_str())
    .bind(create.data.as_ref().map(|d| d.as_value()))
    .bind(now)
    .bind(match_id)
    .fetch_optional(notifier.database.pool())
    .await?;
    let row = match inserted {
        Some(row) => row,
        // Stored before (a replay): read what was stored.
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM notifications WHERE id = $1 OR (match_id = $2 AND user_id = $3)"
            )))
            .bind(create.id.0)
            .bind(match_id)
            .bind(create.user_id.as_str())
            .fetch_one(notifier.database.pool())
            .await?
        }
    };
    row.into_event().ok_or(sqlx::Error::RowNotFound)
}

/// Pushes a stored notification to the user's sockets; marks it delivered if any edge took
/// it. Not delivered stays in the inbox for the next connect.
pub async fn push(notifier: &Notifier, notification: &NotificationNew) -> Result<(), Failure> {
    let delivery = Deliver::server_event(
        vec![Room::User(notification.user_id.clone())],
        NotificationNew::NAME,
        notification,
        None,
    );
    let routed = deliver_routed(&notifier.bus, &delivery).await?;
    if routed {
        sqlx::query("UPDATE notifications SET delivered_at = now() WHERE id = $1 AND delivered_at IS NULL")
            .bind(notification.id.0)
            .execute(notifier.database.pool())
            .await?;
        metrics::counter!("notifier_delivered_total").increment(1);
    } else {
        metrics::counter!("notifier_kept_total").increment(1);
    }
    Ok(())
}

/// `notification.create`: store, then deliver. A notification whose data the database refuses
/// is parked in the dead-letter queue and the next one goes on.
pub async fn handle_create(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let create = match incoming.decode::<CreateNotification>() {
        Ok(envelope) => envelope.data,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    let stored = async {
        let notification = store(notifier, &create, None).await?;
        push(notifier, &notification).await
    };
    match stored.await {
        Ok(()) => Outcome::Ack,
        Err(failure) => failure.outcome("a notification"),
    }
}

/// A user's socket opened on some edge: push what waits in their inbox, oldest first.
pub async fn handle_presence(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let change = match incoming.decode::<PresenceChange>() {
        Ok(envelope) => envelope.data,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    if !change.online {
        return Outcome::Ack;
    }
    match flush(notifier, &change.user_id).await {
        Ok(()) => Outcome::Ack,
        Err(failure) => failure.outcome("an inbox flush"),
    }
}

async fn flush(notifier: &Notifier, user: &UserId) -> Result<(), Failure> {
    let waiting: Vec<NotificationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND delivered_at IS NULL ORDER BY created_at, id LIMIT 500"
    )))
    // Ranges whose best plan depends on the table's size are planned with the actual values
    // (see `switchboard::db` on generic plans).
    .persistent(false)
    .bind(user.as_str())
    .fetch_all(notifier.database.pool())
    .await?;
    for notification in waiting.into_iter().filter_map(NotificationRow::into_event) {
        push(notifier, &notification).await?;
    }
    Ok(())
}

/// `notifications:list` and `notification:read`, answered by any copy.
pub fn serve(notifier: &Arc<Notifier>) {
    let worker = notifier.clone();
    notifier.bus.serve(
        queues::notifications_list(),
        ConsumeOptions::concurrent(8),
        move |query: NotificationsQuery| {
            let worker = worker.clone();
            async move { list(&worker, query).await }
        },
    );
    let worker = notifier.clone();
    notifier.bus.serve(
        queues::notification_read(),
        ConsumeOptions::concurrent(8),
        move |read: MarkNotificationRead| {
            let worker = worker.clone();
            async move { mark_read(&worker, read).await }
        },
    );
}

fn unavailable(error: sqlx::Error) -> AckError {
    tracing::warn!(%error, "a notifications query failed");
    AckError::unavailable()
}

async fn list(notifier: &Notifier, query: NotificationsQuery) -> Result<NotificationsPage, AckError> {
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

/// Only the recipient may mark a notification; anything else is `forbidden`, whether or not
/// the notification exists.
async fn mark_read(notifier: &Notifier, read: MarkNotificationRead) -> Result<Empty, AckError> {
    let marked = sqlx::query(
        "UPDATE notifications SET read_at = coalesce(read_at, now()) WHERE id = $1 AND user_id = $2",
    )
    .bind(read.id.0)
    .bind(read.user_id.as_str())
    .execute(notifier.database.pool())
    .await
    .map_err(unavailable)?;
    if marked.rows_affected() == 0 {
        return Err(AckError::forbidden());
    }
    Ok(Empty {})
}
