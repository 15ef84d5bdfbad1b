//! Each user's notification inbox, as its handlers share it: the stored row, storing a
//! notification, and pushing it to the user's sockets. The rest of the inbox is one handler per
//! kind: store and deliver ([`create_notification`](crate::handlers::create_notification)),
//! deliver at the next connect ([`flush_inbox`](crate::handlers::flush_inbox)), record what an
//! edge emitted to a socket ([`notification_delivered`](crate::handlers::notification_delivered)),
//! list ([`notifications_query`](crate::handlers::notifications_query)), mark read
//! ([`mark_notification_read`](crate::handlers::mark_notification_read)); see the crate docs
//! for the delivery design.

use chrono::{DateTime, SubsecRound, Utc};
use switchboard::{
    backend::deliver,
    bus::Durability,
    contract::{
        NotificationId, Room,
        bus::{CreateNotification, Deliver, NotificationDelivered},
        server::{NotificationNew, ServerEvent},
    },
};
use uuid::Uuid;

use crate::{Failure, Notifier};

/// A row of `notifications`, as this crate reads it.
#[derive(sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    user_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    title: String,
    message: String,
    data: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

/// The columns of a [`NotificationRow`], as every query of this crate selects them.
pub const COLUMNS: &str = "id, user_id, type, title, message, data, created_at, read_at";

impl NotificationRow {
    pub fn into_event(self) -> Option<NotificationNew> {
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
#[tracing::instrument(name = "store notification", skip_all, fields(id = %create.id, user = %create.user_id))]
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

/// The `notification:new` delivery of a notification to its user's sockets.
pub fn delivery(notification: &NotificationNew) -> Deliver {
    let mut deliver = Deliver::server_event(
        vec![Room::User(notification.user_id.clone())],
        NotificationNew::NAME,
        notification,
        None,
    );
    // The edge that hands it to a socket says so (see the crate docs).
    deliver.receipt =
        Some(NotificationDelivered { user_id: notification.user_id.clone(), id: notification.id });
    deliver
}

/// Pushes a stored notification to the user's sockets, wherever they are. It stays undelivered
/// until an edge says it emitted it to a socket
/// ([`notification_delivered`](crate::handlers::notification_delivered)); if none does, the
/// user's next connect brings it ([`flush_inbox`](crate::handlers::flush_inbox)).
pub async fn push(notifier: &Notifier, notification: &NotificationNew) -> Result<(), Failure> {
    deliver(&notifier.bus, delivery(notification), Durability::Confirmed).await?;
    metrics::counter!("notifier_pushed_total").increment(1);
    Ok(())
}
