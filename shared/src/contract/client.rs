//! Client-to-server events (docs/reference.md, Client events): each payload and its success reply.
//!
//! Payload types validate while they deserialize, so a handler that receives one can trust it.
//! Unknown fields are ignored, so clients may send more than we read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ids::{ConversationId, MessageId, NotificationId, UserId},
    server::{MessageNew, NotificationNew},
    text::text_type,
};

/// Makes the one list of client events below into the [`event`] names the edge registers its
/// handlers under and, with the `typescript` feature, the kit's typed event maps.
macro_rules! client_events {
    ($($constant:ident = $name:literal: $payload:ty => $reply:ty,)*) => {
        /// Event names, as clients emit them.
        pub mod event {
            $(pub const $constant: &str = $name;)*
        }

        /// Hands each client event's name, payload type and success reply type to `sink`.
        #[cfg(feature = "typescript")]
        pub(crate) fn visit_events(sink: &mut impl super::typescript::EventSink) {
            $(sink.client::<$payload, $reply>($name);)*
        }
    };
}

// Every client event (docs/reference.md, Client events): name, payload, success reply.
client_events! {
    MESSAGE_SEND = "message:send": MessageSend => MessageSent,
    MESSAGE_READ = "message:read": MessageRead => Empty,
    CONVERSATION_JOIN = "conversation:join": ConversationRef => Empty,
    CONVERSATION_LEAVE = "conversation:leave": ConversationRef => Empty,
    TYPING_START = "typing:start": ConversationRef => Empty,
    TYPING_STOP = "typing:stop": ConversationRef => Empty,
    MESSAGES_SYNC = "messages:sync": MessagesSync => MessagesPage,
    PRESENCE_QUERY = "presence:query": PresenceQuery => PresenceReply,
    NOTIFICATIONS_LIST = "notifications:list": NotificationsList => NotificationsPage,
    NOTIFICATION_READ = "notification:read": NotificationRead => Empty,
}

/// Longest message, in characters after trimming.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Default and largest page of `messages:sync`.
pub const SYNC_DEFAULT_LIMIT: u32 = 50;
pub const SYNC_MAX_LIMIT: u32 = 200;
/// Most ids one `presence:query` may ask about.
pub const PRESENCE_QUERY_MAX_IDS: usize = 200;
/// Default and largest page of `notifications:list`.
pub const NOTIFICATIONS_DEFAULT_LIMIT: u32 = 50;
pub const NOTIFICATIONS_MAX_LIMIT: u32 = 200;

text_type!(
    /// Message text: 1 to 4000 characters once surrounding white space is trimmed (stored
    /// trimmed), no control characters but newline and tab, every bidi embedding, override or
    /// isolate closed, and something visible (see `switchboard::contract::text`).
    Content,
    "content",
    MAX_CONTENT_CHARS
);

/// The client's own id for a send, which makes retries safe: 1 to 128 printable characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(try_from = "String", into = "String")]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientMessageId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > 128 || raw.chars().any(char::is_control) {
            return Err("clientMessageId must be 1 to 128 printable characters".into());
        }
        Ok(Self(raw))
    }
}

impl From<ClientMessageId> for String {
    fn from(c: ClientMessageId) -> String {
        c.0
    }
}

/// `message:send`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessageSend {
    pub conversation_id: ConversationId,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub client_message_id: Option<ClientMessageId>,
}

/// Reply to `message:send`: the stored message's id and place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessageSent {
    pub message_id: MessageId,
    /// Its place in the conversation: 1, 2, 3, ... with no gaps.
    pub seq: i64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// `message:read`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessageRead {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
}

/// `conversation:join`, `conversation:leave`, `typing:start`, `typing:stop`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ConversationRef {
    pub conversation_id: ConversationId,
}

/// `messages:sync`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessagesSync {
    pub conversation_id: ConversationId,
    /// The last `seq` the client has; 0 for everything.
    pub after_seq: u64,
    /// At least 1; 50 when absent, 200 at most (more counts as 200).
    #[serde(default, deserialize_with = "page_limit")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub limit: Option<u32>,
}

impl MessagesSync {
    /// The page size: 50 by default, at most 200.
    pub fn page_size(&self) -> u32 {
        sync_page_size(self.limit)
    }
}

/// The size of a page of a conversation's messages asked with `limit`, by a socket
/// (`messages:sync`) or a backend (the ingress): 50 by default, at most 200.
pub fn sync_page_size(limit: Option<u32>) -> u32 {
    limit.unwrap_or(SYNC_DEFAULT_LIMIT).min(SYNC_MAX_LIMIT)
}

/// A limit is a positive integer; larger than the maximum counts as the maximum.
pub(crate) fn page_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let limit = Option::<u64>::deserialize(d)?;
    match limit {
        Some(0) => Err(serde::de::Error::custom("limit must be at least 1")),
        Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        None => Ok(None),
    }
}

/// Reply to `messages:sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MessagesPage {
    /// Ascending by `seq`.
    pub messages: Vec<MessageNew>,
    /// Whether messages after this page exist.
    pub has_more: bool,
}

/// `presence:query`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PresenceQuery {
    #[serde(deserialize_with = "presence_ids")]
    pub user_ids: Vec<UserId>,
}

pub(crate) fn presence_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<UserId>, D::Error> {
    let ids = Vec::<UserId>::deserialize(d)?;
    if ids.is_empty() || ids.len() > PRESENCE_QUERY_MAX_IDS {
        return Err(serde::de::Error::custom(format!("userIds must hold 1 to {PRESENCE_QUERY_MAX_IDS} ids")));
    }
    Ok(ids)
}

/// One user's presence in a `presence:query` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub online: bool,
    /// When the user was last seen going offline; null if never.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// Reply to `presence:query`: only the caller's contacts appear.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct PresenceReply {
    pub users: BTreeMap<UserId, UserPresence>,
}

/// `notifications:list`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NotificationsList {
    /// Only the notifications not read yet; false when absent.
    // Absent means false: optional for the client.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", ts(as = "Option<bool>", optional))]
    pub unread_only: bool,
    /// At least 1; 50 when absent, 200 at most (more counts as 200).
    #[serde(default, deserialize_with = "page_limit")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub limit: Option<u32>,
}

impl NotificationsList {
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(NOTIFICATIONS_DEFAULT_LIMIT).min(NOTIFICATIONS_MAX_LIMIT)
    }
}

/// Reply to `notifications:list`, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct NotificationsPage {
    pub notifications: Vec<NotificationNew>,
}

/// `notification:read`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct NotificationRead {
    pub id: NotificationId,
}

/// The empty success reply `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_is_trimmed_and_bounded() {
        let send: MessageSend = serde_json::from_value(json!({
            "conversationId": ConversationId::new(), "content": "  hi  ", "extra": 1
        }))
        .expect("valid");
        assert_eq!(send.content.as_str(), "hi");
        assert!(send.client_message_id.is_none());
        for bad in [json!("   "), json!(""), json!("x".repeat(4001)), json!(5)] {
            let v = json!({ "conversationId": ConversationId::new(), "content": bad });
            assert!(serde_json::from_value::<MessageSend>(v).is_err());
        }
        let max = json!({ "conversationId": ConversationId::new(), "content": "é".repeat(4000) });
        assert!(serde_json::from_value::<MessageSend>(max).is_ok());
    }

    #[test]
    fn sync_limits() {
        let id = ConversationId::new();
        let parse = |v| serde_json::from_value::<MessagesSync>(v);
        assert_eq!(parse(json!({"conversationId": id, "afterSeq": 0})).expect("ok").page_size(), 50);
        assert_eq!(
            parse(json!({"conversationId": id, "afterSeq": 0, "limit": 1000})).expect("ok").page_size(),
            200
        );
        assert_eq!(
            parse(json!({"conversationId": id, "afterSeq": 3, "limit": 7})).expect("ok").page_size(),
            7
        );
        assert!(parse(json!({"conversationId": id, "afterSeq": 0, "limit": 0})).is_err());
        assert!(parse(json!({"conversationId": id, "afterSeq": -1})).is_err());
        assert!(parse(json!({"conversationId": "nope", "afterSeq": 0})).is_err());
    }

    #[test]
    fn presence_query_holds_one_to_two_hundred_ids() {
        let ids = |n: usize| json!({ "userIds": (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>() });
        assert!(serde_json::from_value::<PresenceQuery>(ids(0)).is_err());
        assert!(serde_json::from_value::<PresenceQuery>(ids(1)).is_ok());
        assert!(serde_json::from_value::<PresenceQuery>(ids(200)).is_ok());
        assert!(serde_json::from_value::<PresenceQuery>(ids(201)).is_err());
    }
}
