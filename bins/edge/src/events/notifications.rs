//! `notifications:list` and `notification:read`: the caller's own inbox, kept by the notifier.

use switchboard::contract::{
    AckError,
    bus::{MarkNotificationRead, NotificationsQuery},
    client::{Empty, NotificationRead, NotificationsList, NotificationsPage, event},
};

use super::handler::{Context, Events};

pub fn register(events: &mut Events) {
    events.on(event::NOTIFICATIONS_LIST, list);
    events.on(event::NOTIFICATION_READ, read);
}

async fn list(cx: Context, request: NotificationsList) -> Result<NotificationsPage, AckError> {
    let query = NotificationsQuery {
        user_id: cx.client.user.clone(),
        unread_only: request.unread_only,
        limit: request.page_size(),
    };
    cx.ask(&query).await
}

async fn read(cx: Context, request: NotificationRead) -> Result<Empty, AckError> {
    let read = MarkNotificationRead { user_id: cx.client.user.clone(), id: request.id };
    cx.ask(&read).await
}
