//! Bodies of bus messages (inside the [`Envelope`](crate::bus::Envelope)). Each names its kind;
//! `docs/asyncapi.yaml` documents the same for other languages, and a test keeps the two in
//! step through [`KINDS`].

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ids::{ConversationId, Room, UserId};
use crate::bus::{BusMessage, rpc::Request};

/// Every bus message kind this build sends or reads.
pub const KINDS: &[&str] = &[Deliver::KIND, MembershipQuery::KIND, Membership::KIND, EdgeStopping::KIND];

/// A Socket.IO event name a backend may emit: 1 to 128 characters, and not one of the names
/// Socket.IO reserves for itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// An event for sockets: published on `user.direct` (routing key = user id) for a user room,
/// or on `events.topic` (`room.conversation.<id>`) for a conversation room. Every edge that
/// has a socket in the room delivers it, except to the socket named in `except_socket`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deliver {
    pub room: Room,
    pub event: EventName,
    #[serde(default)]
    pub data: serde_json::Value,
    /// The Socket.IO id of the socket that caused the event (the sender of a message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_socket: Option<String>,
}

impl BusMessage for Deliver {
    const KIND: &'static str = "edge.deliver";
}

/// Asked by an edge before a socket joins a conversation room: is this user a participant of
/// this open conversation? Answered by the owner of conversations (`switchboard-messages`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipQuery {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
}

impl BusMessage for MembershipQuery {
    const KIND: &'static str = "conversation.membership.query";
}

impl Request for MembershipQuery {
    type Response = Membership;
}

/// The answer to a [`MembershipQuery`]. A closed (unmatched) or unknown conversation answers
/// `member: false`, so the caller cannot tell the two apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub member: bool,
}

impl BusMessage for Membership {
    const KIND: &'static str = "conversation.membership";
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

impl BusMessage for EdgeStopping {
    const KIND: &'static str = "edge.stopping";
}
