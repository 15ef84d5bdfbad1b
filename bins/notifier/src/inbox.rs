//! Each user's notification inbox: store, deliver now or at the next connect, record what an
//! edge emitted to a socket, list, mark read (see the crate docs for the delivery design).

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use switchboard::{
    backend::{deliver, deliver_all},
    bus::{ConsumeOptions, Durability, Incoming, Outcome, queues},
    contract::domain,
    contract::{
        AckError, NotificationId, Room, UserId,
        bus::{
            CreateNotification, Deliver, FlushInbox, MarkNotificationRead, NotificationDelivered,
            NotificationsQuery,
        },
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
fn delivery(notification: &NotificationNew) -> Deliver {
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
/// until an edge says it emitted it to a socket ([`handle_delivered`]); if none does, the
/// user's next connect brings it ([`handle_flush`]).
pub async fn push(notifier: &Notifier, notification: &NotificationNew) -> Result<(), Failure> {
    deliver(&notifier.bus, delivery(notification), Durability::Confirmed).await?;
    metrics::counter!("notifier_pushed_total").increment(1);
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

/// `notification.flush`: a socket of the user connected; push everything waiting in their
/// inbox, oldest first.
pub async fn handle_flush(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let flush = match incoming.decode::<FlushInbox>() {
        Ok(envelope) => envelope.data,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    match flush_inbox(notifier, &flush.user_id).await {
        Ok(()) => Outcome::Ack,
        Err(failure) => failure.outcome("an inbox flush"),
    }
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

/// `notification.delivered`: an edge emitted the notification to a socket of its user. Only
/// the recipient's own notification is marked, the first time.
pub async fn handle_delivered(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let delivered = match incoming.decode::<NotificationDelivered>() {
        Ok(envelope) => envelope.data,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    let marked: Result<Option<DateTime<Utc>>, _> = sqlx::query_scalar(
        "UPDATE notifications SET delivered_at = now() WHERE id = $1 AND user_id = $2 AND delivered_at IS NULL \
         RETURNING delivered_at",
    )
    .bind(delivered.id.0)
    .bind(delivered.user_id.as_str())
    .fetch_optional(notifier.database.pool())
    .await;
    match marked {
        Ok(Some(at)) => {
            metrics::counter!("notifier_delivered_total").increment(1);
            let event = domain::NotificationDelivered {
                notification_id: delivered.id,
                user_id: delivered.user_id,
                delivered_at: at,
            };
            notifier.domain.publish(&[event]).await;
            Outcome::Ack
        }
        // Marked before: another socket's receipt came first.
        Ok(None) => Outcome::Ack,
        Err(error) => Failure::from(error).outcome("a delivery receipt"),
    }
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

#[tracing::instrument(name = "notifications:list", skip_all, fields(user = %query.user_id))]
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
#[tracing::instrument(name = "notification:read", skip_all, fields(id = %read.id, user = %read.user_id))]
async fn mark_read(notifier: &Notifier, read: MarkNotificationRead) -> Result<Empty, AckError> {
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
