//! Bodies of bus messages (inside the [`Envelope`](crate::bus::Envelope)). Each names its kind;
//! `docs/asyncapi.yaml` documents the same for other languages, and a test keeps the two in
//! step through [`KINDS`].

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::{
    client::{ClientMessageId, Content, Empty, MessageSent, MessagesPage, NotificationsPage, PresenceReply},
    domain,
    ids::{ConversationId, MatchId, MessageId, NotificationId, Room, UserId},
    text::text_type,
};
use crate::bus::{BusMessage, FixedRoute, Route, Routed, Shard, rpc::Request, topology::EVENTS_TOPIC};

/// Names each bus message kind once: every line implements [`BusMessage`] for the type; with
/// `on EXCHANGE "key"` its fixed route ([`Routed`] and [`FixedRoute`]); with `answered by` the
/// [`Request`] it is and the type that answers it. A published kind without `on` computes its
/// route from its content (below the list). The whole list is [`KINDS`], which the AsyncAPI
/// document is checked against.
macro_rules! kinds {
    ($($message:ty => $kind:literal $(on $exchange:ident $key:literal)? $(, answered by $response:ty)?;)*) => {
        $(
            impl BusMessage for $message {
                const KIND: &'static str = $kind;
            }
            $(impl Request for $message {
                type Response = $response;
            })?
            $(
                impl Routed for $message {
                    fn route(&self) -> Route {
                        Route::fixed($exchange, $key)
                    }
                }
                impl FixedRoute for $message {
                    const EXCHANGE: &'static str = $exchange;
                    const KEY: &'static str = $key;
                }
            )?
        )*
        /// Every bus message kind this build sends or reads.
        pub const KINDS: &[&str] = &[$($kind),*];
        /// Each kind with a fixed route: `(kind, exchange, routing key)`.
        pub const FIXED_ROUTES: &[(&str, &str, &str)] = &[$($(($kind, $exchange, $key),)?)*];
    };
}

kinds! {
    Deliver => "edge.deliver";  // to its rooms
    DeliverBatch => "edge.deliver.batch";  // to its items' users
    MembershipQuery => "conversation.membership.query" on EVENTS_TOPIC "rpc.conversation.membership",
        answered by Membership;
    Membership => "conversation.membership";
    EdgeStopping => "edge.stopping" on EVENTS_TOPIC "edge.stopping";
    SendMessage => "message.send", answered by MessageSent;  // to its conversation's shard
    MessageSent => "message.sent";
    MarkRead => "message.read", answered by Empty;  // to its conversation's shard
    Empty => "ok";  // the empty success reply
    SyncQuery => "messages.sync.query" on EVENTS_TOPIC "rpc.messages.sync", answered by MessagesPage;
    MessagesPage => "messages.page";
    CreateConversation => "conversation.create" on EVENTS_TOPIC "rpc.conversation.create",
        answered by ConversationCreated;
    ConversationCreated => "conversation.created";
    ConversationClosed => "conversation.closed" on EVENTS_TOPIC "conversation.closed";
    DisconnectUser => "user.disconnect" on EVENTS_TOPIC "user.disconnect";
    PresenceChange => "presence.change" on EVENTS_TOPIC "presence.change";
    PresenceChanges => "presence.changes" on EVENTS_TOPIC "presence.change";
    EdgeReport => "edge.report" on EVENTS_TOPIC "presence.report";
    ContactsQuery => "conversation.contacts.query" on EVENTS_TOPIC "rpc.conversation.contacts",
        answered by Contacts;
    UserConversationsQuery => "conversations.query" on EVENTS_TOPIC "rpc.conversations.list",
        answered by UserConversations;
    UserConversations => "conversations.list";
    Contacts => "conversation.contacts";
    PresenceLookup => "presence.query" on EVENTS_TOPIC "rpc.presence.query", answered by PresenceReply;
    PresenceReply => "presence.reply";
    MatchCreated => "match.created" on EVENTS_TOPIC "match.created";
    Unmatch => "match.remove" on EVENTS_TOPIC "match.remove";
    CreateNotification => "notification.create" on EVENTS_TOPIC "notification.create";
    CloseConversation => "conversation.close" on EVENTS_TOPIC "rpc.conversation.close", answered by Empty;
    NotificationsQuery => "notifications.query" on EVENTS_TOPIC "rpc.notifications.list",
        answered by NotificationsPage;
    NotificationsPage => "notifications.page";
    MarkNotificationRead => "notification.read" on EVENTS_TOPIC "rpc.notifications.read", answered by Empty;
    ReplyBatch => "rpc.replies";
    RequestBatch => "rpc.requests";  // to the shard its items are for
    ConversationOpened => "conversation.opened" on EVENTS_TOPIC "conversation.opened";
    FlushInbox => "notification.flush" on EVENTS_TOPIC "notification.flush";
    FlushInboxes => "notification.flushes" on EVENTS_TOPIC "notification.flush";
    NotificationDelivered => "notification.delivered" on EVENTS_TOPIC "notification.delivered";
    domain::MessageStored => "domain.message.stored" on EVENTS_TOPIC "domain.message.stored";
    domain::MessageRead => "domain.message.read" on EVENTS_TOPIC "domain.message.read";
    domain::UserOnline => "domain.user.online" on EVENTS_TOPIC "domain.user.online";
    domain::UserOffline => "domain.user.offline" on EVENTS_TOPIC "domain.user.offline";
    domain::MatchCreated => "domain.match.created" on EVENTS_TOPIC "domain.match.created";
    domain::MatchRemoved => "domain.match.removed" on EVENTS_TOPIC "domain.match.removed";
    domain::NotificationDelivered => "domain.notification.delivered"
        on EVENTS_TOPIC "domain.notification.delivered";
    domain::NotificationRead => "domain.notification.read" on EVENTS_TOPIC "domain.notification.read";
}

impl Routed for SendMessage {
    fn route(&self) -> Route {
        Route::shard(Shard::of(self.conversation_id))
    }
}

impl Routed for MarkRead {
    fn route(&self) -> Route {
        Route::shard(Shard::of(self.conversation_id))
    }
}

impl Routed for Deliver {
    /// Its first room's route, with the other rooms' keys as `CC` (a delivery's rooms are all
    /// user rooms or a single conversation room). A delivery with no rooms is routed by an
    /// empty user key, which no queue is bound by.
    fn route(&self) -> Route {
        let Some((first, others)) = self.rooms.split_first() else { return Route::users(std::iter::empty()) };
        Route {
            also: others.iter().map(|room| Route::room(room).key.into_owned()).collect(),
            ..Route::room(first)
        }
    }
}

impl Routed for DeliverBatch {
    /// `user.direct`, addressed to the union of its items' users in first-seen order, so each
    /// edge concerned gets the batch once.
    fn route(&self) -> Route {
        let mut seen = std::collections::HashSet::new();
        Route::users(
            self.items
                .iter()
                .flat_map(|item| &item.rooms)
                .filter_map(|room| match room {
                    Room::User(user) => Some(user.to_string()),
                    Room::Conversation(_) => None,
                })
                .filter(|key| seen.insert(key.clone())),
        )
    }
}

/// Several requests of one requester to one queue in one message, published like a single
/// request (with `reply_to`, mandatory, confirmed) but with no `correlation_id` of its own: an
/// edge sends each chat shard, in one message, every command that arrived while the message
/// before was on its way. The consumer handles the items in order, as if each had come in a
/// message of its own, and answers them (usually together, as an [`ReplyBatch`]). A batch
/// holds at least two items: a lone request travels as a plain one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBatch {
    pub requests: Vec<BatchedRequest>,
}

/// One item of a [`RequestBatch`]: what a request of its own would carry in its envelope
/// (`id`, `kind`, `data`) and in its AMQP properties (`correlationId`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchedRequest {
    /// The request's own id: a command's idempotency key, like a single request's envelope id.
    pub id: Uuid,
    pub correlation_id: String,
    pub kind: String,
    /// The request's body, read only once its kind is known.
    pub data: Box<serde_json::value::RawValue>,
    /// The trace the request belongs to, when traces are exported (a request of its own
    /// carries it in its `traceparent` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

/// A W3C trace context (`00-<trace id>-<span id>-<flags>`): the span a message or a batch item
/// continues, when traces are exported (docs/reference.md, Traces). Passed on as it came; one
/// that cannot be read starts no trace and is otherwise ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TraceParent(pub String);

/// Several replies for one requester in one message, sent to its `reply_to` with no
/// `correlation_id` of its own: a worker that handled a batch answers each requester once.
/// Each item is the body a reply of its own would carry (`{ "ok": ... }` or
/// `{ "error": { code, message } }`) with the request's `correlation_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyBatch {
    pub replies: Vec<BatchedReply>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchedReply {
    pub correlation_id: String,
    pub reply: serde_json::Value,
}

/// A Socket.IO event name a backend may emit: 1 to 128 characters, no control characters (they
/// would end up in logs), and not one of the names Socket.IO reserves for itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(try_from = "String", into = "String")]
pub struct EventName(String);

/// Names the Socket.IO client gives a meaning of its own; emitting them would confuse it.
const RESERVED_EVENTS: &[&str] =
    &["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

impl EventName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > 128 {
            return Err("event must be 1 to 128 characters".into());
        }
        if raw.chars().any(char::is_control) {
            return Err("event must not contain control characters".into());
        }
        if RESERVED_EVENTS.contains(&raw.as_str()) {
            return Err(format!("{raw:?} is reserved by Socket.IO"));
        }
        Ok(Self(raw))
    }
}

impl From<EventName> for String {
    fn from(e: EventName) -> String {
        e.0
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event for sockets. Published on `user.direct` for user rooms (routing key = the first
/// user's id, the others in the `CC` header, so one message reaches every edge concerned), or
/// on `events.topic` (`room.conversation.<id>`) for a conversation room. Every edge that has a
/// socket in one of the rooms emits it once to each such socket, except the socket named in
/// `except_socket`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deliver {
    /// One or more rooms, all user rooms or a single conversation room.
    pub rooms: Vec<Room>,
    pub event: EventName,
    #[serde(default)]
    pub data: serde_json::Value,
    /// The Socket.IO id of the socket that caused the event (the sender of a message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_socket: Option<String>,
    /// The answer to the request that caused this delivery (the `message.send` of
    /// `except_socket`), in place of a reply of its own: the edge of the sending socket gets the
    /// delivery anyway, since the sender's user room is one of its rooms. An edge that is
    /// waiting for this correlation id takes the answer; every other edge ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<BatchedReply>,
    /// The trace of the message this delivers, when traces are exported: each item of a batch
    /// carries its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
    /// The receipt to send once a connected socket took the event (set by the notifier on its
    /// `notification:new`, addressed to the recipient's user room alone): the edge emits such a
    /// delivery socket by socket and publishes this `notification.delivered` if one took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<NotificationDelivered>,
}

impl Deliver {
    /// One of the server's own events (the names of docs/reference.md, Server events) for `rooms`.
    pub fn server_event(
        rooms: Vec<Room>,
        event: &'static str,
        body: &impl Serialize,
        except_socket: Option<String>,
    ) -> Self {
        debug_assert!(EventName::try_from(event.to_owned()).is_ok(), "{event} is a valid event name");
        Self {
            rooms,
            event: EventName(event.to_owned()),
            // Our own payload types always serialize.
            data: serde_json::to_value(body).unwrap_or_default(),
            except_socket,
            reply: None,
            traceparent: None,
            receipt: None,
        }
    }
}

/// Several [`Deliver`]s to user rooms in one message, published on `user.direct` addressed to
/// the union of their users (routing key = the first, the others in `CC`). An edge that
/// receives it hands each item to its own sockets in that item's rooms, in order, leaving out
/// each item's `except_socket`; items for users it has no socket of cost it nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverBatch {
    pub items: Vec<Deliver>,
}

/// Asked by an edge before a socket joins a conversation room: is this user a participant of
/// this open conversation? Answered by the owner of conversations (`switchboard-messages`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipQuery {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
}

/// The answer to a [`MembershipQuery`]. A closed (unmatched) or unknown conversation answers
/// `member: false`, so the caller cannot tell the two apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub member: bool,
}

/// An edge is shutting down: its sockets are closing. Presence uses it to start the offline
/// grace period of these users at once instead of waiting for the edge's reports to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeStopping {
    pub edge_id: Uuid,
    /// The users that had at least one socket on this edge.
    pub users: Vec<UserId>,
}

/// `message:send` as a command to the messages worker: published as a request on
/// `events.topic` with the routing key of the conversation's shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    /// The sending socket, which does not get its own `message:new`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_socket: Option<String>,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<ClientMessageId>,
    /// After this the sender has been told `timeout`: the command must not be carried out.
    pub expires_at: DateTime<Utc>,
}

/// `message:read` as a command, on the conversation's shard like the sends it refers to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkRead {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_socket: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// `messages:sync` as a query to the messages worker, and a backend's read of a conversation's
/// history (ingress `GET /api/v1/conversations/{conversationId}/messages`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncQuery {
    pub conversation_id: ConversationId,
    /// The user asking, who must be a participant of the open conversation; absent for a
    /// backend, which may read any conversation that exists, closed ones too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    pub after_seq: u64,
    pub limit: u32,
}

/// Creates a conversation (ingress `POST /api/v1/conversations`, and the notifier for a
/// match). With a `match_id` it is idempotent: the same match always gets the same
/// conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateConversation {
    pub participants: Vec<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_id: Option<MatchId>,
}

impl CreateConversation {
    /// Most participants of one conversation (docs/reference.md, Ingress).
    pub const MAX_PARTICIPANTS: usize = 100;

    /// The contract's rule: 2 to 100 distinct participants. Checked by the ingress (a 400
    /// before anything is sent) and by the messages worker (for other publishers).
    pub fn check(&self) -> Result<(), String> {
        let distinct: std::collections::BTreeSet<&UserId> = self.participants.iter().collect();
        if distinct.len() != self.participants.len() {
            return Err("participants must be distinct".into());
        }
        if !(2..=Self::MAX_PARTICIPANTS).contains(&distinct.len()) {
            return Err(format!("a conversation has 2 to {} participants", Self::MAX_PARTICIPANTS));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationCreated {
    pub conversation_id: ConversationId,
}

/// A conversation was closed for good (an unmatch). Every edge receives it (`events.topic`,
/// `conversation.closed`) and at once makes its sockets leave the conversation's room and
/// forgets anything it knew about the membership.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationClosed {
    pub conversation_id: ConversationId,
    pub participants: Vec<UserId>,
}

/// An edge's first socket of a user opened (`online: true`) or its last one closed. Sent in
/// order with the edge's reports, to `events.topic` `presence.change`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceChange {
    pub edge_id: Uuid,
    pub user_id: UserId,
    pub online: bool,
    pub at: DateTime<Utc>,
}

/// Several [`PresenceChange`]s of one edge in one message, in the order they happened: the
/// changes an edge saw while its last one was on its way (many users connecting at once, as
/// after an edge restart). Same route as a single change; a lone change travels as a plain
/// `presence.change`. At most [`PresenceChanges::MAX`] changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceChanges {
    pub changes: Vec<PresenceChange>,
}

impl PresenceChanges {
    pub const MAX: usize = 500;
}

/// Every user with a socket on an edge, sent by each edge every `PRESENCE_REPORT_INTERVAL_MS`
/// to `events.topic` `presence.report`. It heals any change that was lost, and an edge whose
/// reports stop (it died) has its users taken offline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeReport {
    pub edge_id: Uuid,
    pub users: Vec<UserId>,
    /// How often this edge reports; it is considered dead after three intervals of silence.
    pub interval_ms: u64,
}

/// Who shares an open conversation with each of `user_ids`: asked of the owner of
/// conversations by presence, to address `user:online`/`user:offline` (one query for every
/// announcement decided while the last ones were being published) and to answer
/// `presence:query`. At most [`ContactsQuery::MAX_USERS`] users; more is `invalid`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactsQuery {
    pub user_ids: Vec<UserId>,
}

impl ContactsQuery {
    pub const MAX_USERS: usize = 500;
}

/// The answer to [`ContactsQuery`]: every user asked about, each with their contacts (an empty
/// list for a user who has none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contacts {
    pub contacts: BTreeMap<UserId, Vec<UserId>>,
}

/// End every socket of a user, on every edge (a logout everywhere, a ban): `events.topic`
/// `user.disconnect`, which every edge's queue is bound to. Each edge first forgets the user's
/// cached sessions when `revoke_sessions` is set, then disconnects the user's sockets; the
/// clients see a server-side disconnect and do not reconnect by themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectUser {
    pub user_id: UserId,
    /// Also forget the sessions each edge has cached for the user (`database` auth mode), so
    /// that a reconnect looks the session up again: set it once the host application has
    /// deleted or expired the user's sessions. A JWT cannot be revoked this way.
    #[serde(default)]
    pub revoke_sessions: bool,
}

/// Every conversation `user_id` takes part in, open or closed: asked of the owner of
/// conversations by the ingress (`GET /api/v1/users/{userId}/conversations`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserConversationsQuery {
    pub user_id: UserId,
}

/// A user's conversations, newest first (the answer to [`UserConversationsQuery`], and the
/// ingress's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UserConversations {
    /// Newest first; empty for a user in none.
    pub conversations: Vec<ConversationSummary>,
}

/// One conversation of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    pub conversation_id: ConversationId,
    /// Every participant, the user included, sorted.
    pub participants: Vec<UserId>,
    /// The match it was made for; null for one made with `POST /api/v1/conversations`.
    pub match_id: Option<MatchId>,
    pub created_at: DateTime<Utc>,
    /// When an unmatch closed it for good; null while it is open.
    pub closed_at: Option<DateTime<Utc>>,
    /// The `seq` of its newest message; 0 before the first.
    pub last_seq: i64,
}

/// `presence:query` for the presence worker: `user_id` asks about `user_ids`; only contacts
/// are answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceLookup {
    /// The user asking, who is answered about their contacts only; absent for a backend
    /// (ingress `POST /api/v1/presence/query`), which is answered about every user it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    pub user_ids: Vec<UserId>,
}

/// Two users matched (docs/reference.md, Ingress): `events.topic` `match.created`, persistent. Every
/// way in (ingress, the Rust library, AMQP) publishes this; the notifier makes the
/// conversation and the notifications, once per `match_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchCreated {
    pub match_id: MatchId,
    pub user_ids: [UserId; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// The unmatch: `events.topic` `match.remove`, persistent, on the same queue as the matches
/// so the two are handled in the order they were published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmatch {
    pub match_id: MatchId,
}

/// A notification for a user's inbox: `events.topic` `notification.create`, persistent. The id
/// is minted by the publisher so it can be returned at once (ingress `202 { id }`), and makes
/// a replay store nothing new.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateNotification {
    pub id: NotificationId,
    pub user_id: UserId,
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    pub title: NotificationTitle,
    pub message: NotificationText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<NotificationData>,
}

text_type!(
    /// A notification's `type` (`match`, `system`, ...): 1 to 64 characters under the text
    /// rules (`switchboard::contract::text`).
    NotificationKind,
    "type",
    64
);
text_type!(
    /// A notification's `title`: 1 to 200 characters under the text rules
    /// (`switchboard::contract::text`).
    NotificationTitle,
    "title",
    200
);
text_type!(
    /// A notification's `message`: 1 to 4000 characters under the text rules
    /// (`switchboard::contract::text`).
    NotificationText,
    "message",
    4000
);

/// A notification's `data`: any JSON whose strings and keys pass the character rules of the
/// text rules (`switchboard::contract::text`): PostgreSQL's `jsonb` refuses `\u0000`, and a
/// client shows these strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct NotificationData(serde_json::Value);

impl NotificationData {
    pub fn as_value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl TryFrom<serde_json::Value> for NotificationData {
    type Error = String;
    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        super::text::check_json("data", &value)?;
        Ok(Self(value))
    }
}

impl From<NotificationData> for serde_json::Value {
    fn from(data: NotificationData) -> serde_json::Value {
        data.0
    }
}

/// Closes a conversation for good (an unmatch); asked of the messages worker, which then tells
/// every edge with [`ConversationClosed`]. Idempotent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseConversation {
    pub conversation_id: ConversationId,
}

/// `notifications:list` for the notifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsQuery {
    pub user_id: UserId,
    pub unread_only: bool,
    pub limit: u32,
}

/// `notification:read` for the notifier: only the recipient may mark it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkNotificationRead {
    pub user_id: UserId,
    pub id: NotificationId,
}

/// A conversation was created (or its creation asked again: at least once): `events.topic`
/// `conversation.opened`, published by the owner of conversations once it is stored. Presence
/// introduces the participants who are online to each other with `user:online`, since they
/// were not each other's contacts when they came online.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationOpened {
    pub conversation_id: ConversationId,
    pub participants: Vec<UserId>,
}

/// A socket of `user_id` has connected: `events.topic` `notification.flush`, persistent and
/// confirmed, published by the edge once the client is told it is connected. The notifier
/// pushes every notification of the user not yet delivered, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlushInbox {
    pub user_id: UserId,
}

/// Several [`FlushInbox`]es from one edge in one message: the users whose first socket there
/// connected while its last flush request was on its way (thousands at once when an edge
/// restarts). Same route, persistent and confirmed likewise; a lone user travels as a plain
/// `notification.flush`. At most [`FlushInboxes::MAX`] users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlushInboxes {
    pub user_ids: Vec<UserId>,
}

impl FlushInboxes {
    pub const MAX: usize = 500;
}

/// An edge emitted `notification:new` `id` to at least one socket of `user_id`:
/// `events.topic` `notification.delivered`, persistent and confirmed. Only this marks a
/// notification delivered; one never marked is pushed again at the user's next connect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationDelivered {
    pub user_id: UserId,
    pub id: NotificationId,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn event_names_hold_no_control_characters() {
        assert!(EventName::try_from("order:shipped".to_owned()).is_ok());
        for bad in ["a\nb", "\u{0}", "x\u{1B}[2J", "disconnect", ""] {
            assert!(EventName::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn notification_texts_and_data_follow_the_text_rules() {
        let body = |title: &str, data: serde_json::Value| {
            json!({ "id": NotificationId::new(), "userId": "bob", "type": "system", "title": title,
                    "message": "m", "data": data })
        };
        let ok: CreateNotification =
            serde_json::from_value(body("  Hi  ", json!({"k": ["a\nb"]}))).expect("valid");
        assert_eq!(ok.title.as_str(), "Hi");
        for bad in
            [body("a\u{0}", json!(null)), body("Hi", json!({"k": "\u{0}"})), body("\u{200B}", json!(null))]
        {
            assert!(serde_json::from_value::<CreateNotification>(bad.clone()).is_err(), "{bad}");
        }
    }
}
