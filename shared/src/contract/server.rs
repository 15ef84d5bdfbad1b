//! Server-to-client events (docs/reference.md, Server events). Each type knows its event name through
//! [`ServerEvent`], so an emit can never pair a payload with the wrong name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    client::ClientMessageId,
    ids::{ConversationId, MatchId, MessageId, NotificationId, UserId},
};

/// A payload the server pushes to sockets, with its event name (all listed at the end of this
/// module).
pub trait ServerEvent: Serialize {
    const NAME: &'static str;
}

/// `session`: sent to a socket right after it connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user_id: UserId,
    /// The server's clock when the socket connected.
    pub server_time: DateTime<Utc>,
}

/// `message:new`; also the element of a `messages:sync` page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessageNew {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    /// The text as stored (trimmed).
    pub content: String,
    /// Its place in the conversation: 1, 2, 3, ... with no gaps and no repeats.
    pub seq: i64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub client_message_id: Option<ClientMessageId>,
}

/// `message:read`: a participant read up to `message_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessageReadEvent {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    /// Who read.
    pub user_id: UserId,
    pub read_at: DateTime<Utc>,
}

/// `typing:start` and `typing:stop` share this body; [`Typing::START`] and [`Typing::STOP`] name them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
}

impl Typing {
    pub const START: &'static str = "typing:start";
    pub const STOP: &'static str = "typing:stop";
}

/// `user:online`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UserOnline {
    pub user_id: UserId,
    /// When the user's first socket connected.
    pub at: DateTime<Utc>,
}

/// `user:offline`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UserOffline {
    pub user_id: UserId,
    /// When the user's last socket closed.
    pub last_seen_at: DateTime<Utc>,
}

/// `notification:new`; also the element of a `notifications:list` page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NotificationNew {
    pub id: NotificationId,
    /// What kind of notification: `match`, or any type a backend chose.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub message: String,
    /// The recipient.
    pub user_id: UserId,
    /// When it was created.
    pub timestamp: DateTime<Utc>,
    /// Whatever the sender attached; for type `match`, a `MatchNotificationData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub data: Option<serde_json::Value>,
    /// When the user marked it read; `notifications:list` shows it, pushes leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub read_at: Option<DateTime<Utc>>,
}

/// `data` of a notification of type `match`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MatchNotificationData {
    pub match_id: MatchId,
    pub conversation_id: ConversationId,
    pub other_user_id: UserId,
}

/// `match:new`: `user_id` is the other person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MatchNew {
    pub match_id: MatchId,
    /// The other person.
    pub user_id: UserId,
    /// The conversation the match opened between the two.
    pub conversation_id: ConversationId,
    pub created_at: DateTime<Utc>,
}

/// `match:removed`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MatchRemoved {
    pub match_id: MatchId,
    pub conversation_id: ConversationId,
}

/// `sync:required`: this socket's edge lost its deliveries for a while (its queue went away
/// with the broker, and what was routed to it meanwhile with it). Anything sent to this socket
/// since `since` may be missing: the client catches up as after a reconnect, with
/// `messages:sync` from the last `seq` it saw in each conversation (and `notifications:list`
/// if it keeps a list; unread notifications are also pushed again). The socket stays
/// connected and its rooms stay joined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SyncRequired {
    /// When the edge stopped receiving deliveries.
    pub since: DateTime<Utc>,
}

/// Makes the one list of server events below into [`ServerEvent`] implementations, [`NAMES`]
/// and, with the `typescript` feature, the kit's typed event maps.
macro_rules! server_events {
    (
        $($ty:ty => $name:literal,)*
        ;
        $($shared:ty => [$($shared_name:expr),+],)*
    ) => {
        $(impl ServerEvent for $ty {
            const NAME: &'static str = $name;
        })*

        /// Every server event's name: the events of docs/reference.md, Server events the system itself emits.
        pub const NAMES: &[&str] = &[$($name,)* $($($shared_name,)+)*];

        /// Hands each server event's name and payload type to `sink`.
        #[cfg(feature = "typescript")]
        pub(crate) fn visit_events(sink: &mut impl super::typescript::EventSink) {
            $(sink.server::<$ty>($name);)*
            $($(sink.server::<$shared>($shared_name);)+)*
        }
    };
}

// Every server event (docs/reference.md, Server events) with its payload.
server_events! {
    Session => "session",
    MessageNew => "message:new",
    MessageReadEvent => "message:read",
    UserOnline => "user:online",
    UserOffline => "user:offline",
    NotificationNew => "notification:new",
    MatchNew => "match:new",
    MatchRemoved => "match:removed",
    SyncRequired => "sync:required",
    ;
    // Bodies shared by several events, whose sender names the event.
    Typing => [Typing::START, Typing::STOP],
}

/// `name` as one of [`NAMES`], or `None` for a name only a backend uses (docs/reference.md, Ingress:
/// any event a backend emits). Gives a metric label from a bounded set whatever name a
/// backend picks.
pub fn known(name: &str) -> Option<&'static str> {
    NAMES.iter().copied().find(|known| *known == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_event_is_known_and_nothing_else() {
        for name in [Session::NAME, MessageNew::NAME, MatchRemoved::NAME, Typing::START, Typing::STOP] {
            assert_eq!(known(name), Some(name));
        }
        let distinct: std::collections::BTreeSet<_> = NAMES.iter().collect();
        assert_eq!(distinct.len(), NAMES.len(), "a name is listed twice: {NAMES:?}");
        assert_eq!(known("order:shipped"), None);
        assert_eq!(known("other"), None);
    }
}
