//! The bodies of the HTTP ingress for backends (docs/reference.md, Ingress; docs/openapi.json):
//! what each `/api/v1/*` request carries and what each answers.
//!
//! The edge parses requests into these types (through [`object::from_slice`](super::object),
//! like every outside input) and serializes its answers from them; the OpenAPI document is
//! derived from the same types (`utoipa`), so the document cannot say one thing while the edge
//! does another. The rules a type cannot say in JSON Schema (exactly one of `userId` and
//! `room`, the text rules) are checked by the edge and answered 400.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        ArrayBuilder, KnownFormat, ObjectBuilder, Ref, RefOr, SchemaFormat, Type,
        schema::{Schema, SchemaType},
    },
};

use super::{
    bus::{
        CreateConversation, EventName, NotificationData, NotificationKind, NotificationText,
        NotificationTitle,
    },
    client::{ClientMessageId, Content, PRESENCE_QUERY_MAX_IDS, page_limit, presence_ids, sync_page_size},
    ids::{ConversationId, MatchId, MessageId, NotificationId, Room, UserId},
};

/// The characters the host application's ids may use (`ids::check_external_id`).
const EXTERNAL_ID_PATTERN: &str = "^[A-Za-z0-9_.:@-]+$";
const UUID_PATTERN: &str = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

/// A string schema with the given bounds; each contract type that travels as a string says
/// its own.
fn string(
    description: &str,
    min: Option<usize>,
    max: Option<usize>,
    pattern: Option<String>,
) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(min)
        .max_length(max)
        .pattern(pattern)
}

/// Implements `ToSchema` for contract types that serialize as a string: `$type => schema`.
macro_rules! string_schemas {
    ($($ty:ty => $schema:expr;)*) => {
        $(
            impl PartialSchema for $ty {
                fn schema() -> RefOr<Schema> {
                    $schema.into()
                }
            }
            impl ToSchema for $ty {}
        )*
    };
}

fn minted(what: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .description(Some(format!("A {what}, minted by Switchboard (UUIDv7).")))
}

/// A text under the contract's text rules (`switchboard::contract::text`), at most `max`
/// characters once trimmed.
fn text(what: &str, max: usize) -> ObjectBuilder {
    string(
        &format!(
            "{what}: 1 to {max} characters once trimmed, no control characters but newline and tab, \
             bidi controls balanced, something visible."
        ),
        Some(1),
        None,
        None,
    )
}

string_schemas! {
    UserId => string("A user of the host application.", Some(1), Some(128), Some(EXTERNAL_ID_PATTERN.into()));
    MatchId => string(
        "A match, named by the host application.",
        Some(1),
        Some(128),
        Some(EXTERNAL_ID_PATTERN.into()),
    );
    ConversationId => minted("conversation");
    MessageId => minted("message");
    NotificationId => minted("notification");
    Room => string(
        "`user:<userId>` (every socket of the user) or `conversation:<conversationId>` (the sockets that \
         joined it).",
        None,
        None,
        Some(format!("^(user:[A-Za-z0-9_.:@-]{{1,128}}|conversation:{UUID_PATTERN})$")),
    );
    EventName => string(
        "A Socket.IO event name: no control characters, not one Socket.IO reserves (`connect`, \
         `connect_error`, `disconnect`, `disconnecting`, `newListener`, `removeListener`).",
        Some(1),
        Some(128),
        None,
    );
    NotificationKind => text("A notification's type (`match`, `system`, ...)", NotificationKind::MAX_CHARS);
    NotificationTitle => text("A notification's title", NotificationTitle::MAX_CHARS);
    NotificationText => text("A notification's message", NotificationText::MAX_CHARS);
    Content => text("A message's text", Content::MAX_CHARS);
    ClientMessageId => string(
        "The client's own id for a send, which makes retries safe: printable characters.",
        Some(1),
        Some(128),
        None,
    );
}

impl PartialSchema for NotificationData {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some("Any JSON whose strings and keys follow the text rules' character rules."))
            .into()
    }
}
impl ToSchema for NotificationData {}

/// Distinct users, `min` to `max` of them: what the derive cannot say (`uniqueItems`).
fn distinct_users(description: &str, min: usize, max: usize) -> ArrayBuilder {
    ArrayBuilder::new()
        .items(RefOr::Ref(Ref::from_schema_name(UserId::name())))
        .min_items(Some(min))
        .max_items(Some(max))
        .unique_items(true)
        .description(Some(description))
}

fn participants() -> ArrayBuilder {
    distinct_users("2 to 100 distinct users.", 2, CreateConversation::MAX_PARTICIPANTS)
}

fn match_users() -> ArrayBuilder {
    distinct_users("Two different users.", 2, 2)
}

/// `POST /api/v1/emit`: an event for a user's sockets or a room's, on every edge. Exactly one
/// of `userId` and `room`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmitRequest {
    /// Every socket of this user; exactly one of `userId` and `room`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub user_id: Option<UserId>,
    /// The sockets of a room; exactly one of `userId` and `room`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub room: Option<Room>,
    pub event: EventName,
    /// The event's payload, as is; `null` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", ts(as = "Option<Value>", optional))]
    pub data: Value,
}

/// `POST /api/v1/conversations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct CreateConversationRequest {
    /// 2 to 100 distinct users.
    #[schema(schema_with = participants)]
    pub participants: Vec<UserId>,
}

/// `POST /api/v1/matches`: two users matched in the host application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchRequest {
    /// The host application's id; the request is idempotent by it.
    pub match_id: MatchId,
    /// Two different users.
    #[schema(schema_with = match_users)]
    pub user_ids: [UserId; 2],
    /// When the match happened (RFC 3339); absent: when the notifier handles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /api/v1/notifications`: a notification for a user's inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationRequest {
    /// The recipient.
    pub user_id: UserId,
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    pub title: NotificationTitle,
    pub message: NotificationText,
    /// Absent and `null` are the same: no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // `NotificationData` already takes `null`: a `oneOf` with null would match it twice.
    #[schema(nullable = false)]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub data: Option<NotificationData>,
}

/// The query of `GET /api/v1/conversations/{conversationId}/messages`: a page of the
/// conversation's history, like `messages:sync`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessagesParams {
    /// The page holds the messages with a greater `seq`: 0 (the default) for the first page,
    /// else the last `seq` of the page before.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", ts(as = "Option<u64>", optional))]
    pub after_seq: u64,
    /// At least 1; 50 when absent, 200 at most (more counts as 200).
    #[serde(default, deserialize_with = "page_limit", skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1)]
    #[cfg_attr(feature = "typescript", ts(optional))]
    pub limit: Option<u32>,
}

impl MessagesParams {
    /// The page size: 50 by default, at most 200.
    pub fn page_size(&self) -> u32 {
        sync_page_size(self.limit)
    }
}

/// `POST /api/v1/presence/query`: the presence of any users, contacts or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceRequest {
    /// 1 to 200 users; each is answered once, whether or not it was ever seen.
    #[serde(deserialize_with = "presence_ids")]
    #[schema(schema_with = presence_users)]
    pub user_ids: Vec<UserId>,
}

fn presence_users() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(RefOr::Ref(Ref::from_schema_name(UserId::name())))
        .min_items(Some(1))
        .max_items(Some(PRESENCE_QUERY_MAX_IDS))
        .description(Some("1 to 200 users; each is answered once."))
}

/// The query of `DELETE /api/v1/users/{userId}/sockets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectParams {
    /// Also forget the sessions the edges have cached for the user (`database` auth mode), so
    /// a reconnect looks the session up again; `false` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", ts(as = "Option<bool>", optional))]
    pub revoke_sessions: bool,
}

/// Hands every body and answer of the ingress to `visitor`: the TypeScript kit's emitter
/// (`clients/typescript/src/server.ts`) sends and reads these, generated, not written twice.
#[cfg(feature = "typescript")]
pub(crate) fn visit_types(visitor: &mut impl ts_rs::TypeVisitor) {
    use super::{
        bus::UserConversations,
        client::{MessagesPage, PresenceReply},
    };

    visitor.visit::<EmitRequest>();
    visitor.visit::<CreateConversationRequest>();
    visitor.visit::<ConversationCreatedReply>();
    visitor.visit::<MatchRequest>();
    visitor.visit::<MatchAccepted>();
    visitor.visit::<NotificationRequest>();
    visitor.visit::<NotificationAccepted>();
    visitor.visit::<MessagesParams>();
    visitor.visit::<MessagesPage>();
    visitor.visit::<PresenceRequest>();
    visitor.visit::<PresenceReply>();
    visitor.visit::<UserConversations>();
    visitor.visit::<DisconnectParams>();
    visitor.visit::<Accepted>();
    visitor.visit::<ErrorBody>();
}

/// The answer of a request that was taken and has nothing to tell: `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct Accepted {}

/// `201` of `POST /api/v1/conversations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ConversationCreatedReply {
    pub conversation_id: ConversationId,
}

/// `202` of `POST /api/v1/matches`: the match and its conversation, the same for every repeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MatchAccepted {
    pub match_id: MatchId,
    pub conversation_id: ConversationId,
}

/// `202` of `POST /api/v1/notifications`: the id the notification is stored under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct NotificationAccepted {
    pub id: NotificationId,
}

/// Every refusal of the ingress: `{ error: { code, message } }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ErrorDetail {
    /// One of the contract's error codes (`invalid`, `unavailable`, `timeout`, ...) or one only
    /// HTTP has: `unauthorized`, `not_found`, `method_not_allowed`, `too_large`.
    pub code: Cow<'static, str>,
    /// For people; never carries internals.
    pub message: String,
}
