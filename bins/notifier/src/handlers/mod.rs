//! What the notifier consumes, and where each kind is handled: one module per kind, named
//! after it. Each queue is consumed here ([`consume`]); `notifier.matches` carries two kinds and
//! decodes into [`MatchEvent`], dispatched in [`match_event`], `notifier.flush` carries two and
//! decodes into [`FlushRequest`], dispatched in [`flush_request`]; every other queue carries one.
//!
//! | queue | kind | handler |
//! | --- | --- | --- |
//! | `notifier.matches` | `match.created` | [`match_created`] |
//! | `notifier.matches` | `match.remove` | [`unmatch`] |
//! | `notifier.notifications` | `notification.create` | [`create_notification`] |
//! | `notifier.flush` | `notification.flush` | [`flush_inbox`] |
//! | `notifier.flush` | `notification.flushes` | [`flush_inboxes`] |
//! | `notifier.delivered` | `notification.delivered` | [`notification_delivered`] |
//! | `notifier.list` | `notifications.query` | [`notifications_query`] |
//! | `notifier.read` | `notification.read` | [`mark_notification_read`] |

pub mod create_notification;
pub mod flush_inbox;
pub mod flush_inboxes;
pub mod mark_notification_read;
pub mod match_created;
pub mod notification_delivered;
pub mod notifications_query;
pub mod unmatch;

use std::sync::Arc;

use switchboard::{
    bus::{
        ConsumeOptions, Incoming, Outcome, queues,
        queues::{FlushRequest, MatchEvent},
    },
    contract::{
        AckError,
        bus::{MarkNotificationRead, NotificationsQuery},
    },
};

use crate::{Failure, Notifier};

/// Starts a consumer on each of the notifier's queues, each handing its kinds to their module.
pub fn consume(notifier: &Arc<Notifier>) {
    let worker = notifier.clone();
    notifier.bus.consume(queues::matches(), ConsumeOptions::ordered(), move |incoming| {
        let worker = worker.clone();
        async move { match_event(&worker, incoming).await }
    });
    let worker = notifier.clone();
    notifier.bus.consume(queues::notifications(), ConsumeOptions::concurrent(8), move |incoming| {
        let worker = worker.clone();
        async move { create_notification::handle(&worker, incoming).await }
    });
    let worker = notifier.clone();
    // Many at once, so that their inbox checks share a query (see `waiting`).
    notifier.bus.consume(queues::flush_inbox(), ConsumeOptions::concurrent(64), move |incoming| {
        let worker = worker.clone();
        async move { flush_request(&worker, incoming).await }
    });
    let worker = notifier.clone();
    notifier.bus.consume(queues::delivered_notifications(), ConsumeOptions::concurrent(8), move |incoming| {
        let worker = worker.clone();
        async move { notification_delivered::handle(&worker, incoming).await }
    });
    serve(notifier);
}

/// `match.created` and the unmatch, in the order they were published (one active consumer).
pub async fn match_event(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let result = match incoming.decode_inbound::<MatchEvent>().map(|envelope| envelope.data) {
        Ok(MatchEvent::MatchCreated(created)) => match_created::handle(notifier, created).await,
        Ok(MatchEvent::Unmatch(unmatch)) => unmatch::handle(notifier, unmatch).await,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    // Away (the database, the owner of conversations): tried again later, in order. Refused
    // for good: parked, and the next match goes on.
    Failure::settle(result, "a match")
}

/// `notifier.flush`: one user's inbox flush, or several users' from one edge.
pub async fn flush_request(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let result = match incoming.decode_inbound::<FlushRequest>().map(|envelope| envelope.data) {
        Ok(FlushRequest::FlushInbox(flush)) => flush_inbox::handle(notifier, flush).await,
        Ok(FlushRequest::FlushInboxes(flushes)) => flush_inboxes::handle(notifier, flushes).await,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    Failure::settle(result, "an inbox flush")
}

/// `notifications:list` and `notification:read`, answered by any copy.
fn serve(notifier: &Arc<Notifier>) {
    let worker = notifier.clone();
    notifier.bus.serve(
        queues::notifications_list(),
        ConsumeOptions::concurrent(8),
        move |query: NotificationsQuery| {
            let worker = worker.clone();
            async move { notifications_query::handle(&worker, query).await }
        },
    );
    let worker = notifier.clone();
    notifier.bus.serve(
        queues::notification_read(),
        ConsumeOptions::concurrent(8),
        move |read: MarkNotificationRead| {
            let worker = worker.clone();
            async move { mark_notification_read::handle(&worker, read).await }
        },
    );
}

/// A query the database could not answer: `unavailable`, and the cause logged.
fn unavailable(error: sqlx::Error) -> AckError {
    tracing::warn!(%error, "a notifications query failed");
    AckError::unavailable()
}
