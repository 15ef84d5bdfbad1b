//! `notification.delivered`: an edge's receipt, sent when it emitted a `notification:new` to at
//! least one connected socket of its user. This, and only this, sets `delivered_at` (see the
//! crate docs for why a push alone does not). Only the recipient's own notification is marked,
//! the first time, and only then is `domain.notification.delivered` published.

use chrono::{DateTime, Utc};
use switchboard::{
    bus::{Incoming, Outcome},
    contract::{bus::NotificationDelivered, domain},
};

use crate::{Failure, Notifier};

/// `notification.delivered`: an edge emitted the notification to a socket of its user. Only
/// the recipient's own notification is marked, the first time.
pub async fn handle(notifier: &Notifier, incoming: Incoming) -> Outcome {
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
