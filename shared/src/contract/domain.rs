//! Domain events for backends (docs/reference.md, Domain events): what happened, published on
//! `events.topic` under `domain.<what>` for any backend that binds a queue of its own to those
//! keys (`domain.#` for all). Published by [`DomainEvents`](crate::bus::DomainEvents) only while
//! some queue is bound to the key; at least once (a redelivered command may repeat one, with the
//! same ids), in order per conversation for the message events.
//!
//! The bodies are the clients' own payloads where clients see the same fact, so a backend and a
//! socket read the same ids, `seq` and times.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ids::{ConversationId, MatchId, NotificationId, UserId},
    server,
};

/// `domain.message.stored`: a message was stored; the body is the `message:new` its
/// participants got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageStored(pub server::MessageNew);

/// `domain.message.read`: a participant read a conversation up to a message; the body is the
/// `message:read` the others got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageRead(pub server::MessageReadEvent);

/// `domain.user.online`: a user's first socket on any edge connected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserOnline(pub server::UserOnline);

/// `domain.user.offline`: a user's last socket closed (after `PRESENCE_OFFLINE_GRACE_MS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserOffline(pub server::UserOffline);

/// `domain.match.created`: a match was recorded and its conversation opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchCreated {
    pub match_id: MatchId,
    pub conversation_id: ConversationId,
    pub user_ids: [UserId; 2],
    pub created_at: DateTime<Utc>,
}

/// `domain.match.removed`: a match was removed and its conversation closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MatchRemoved(pub server::MatchRemoved);

/// `domain.notification.delivered`: a socket of the user got the notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationDelivered {
    pub notification_id: NotificationId,
    pub user_id: UserId,
    pub delivered_at: DateTime<Utc>,
}

/// `domain.notification.read`: the user marked the notification read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRead {
    pub notification_id: NotificationId,
    pub user_id: UserId,
    pub read_at: DateTime<Utc>,
}
