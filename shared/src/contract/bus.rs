//! Bodies of bus messages (inside the [`Envelope`](crate::bus::Envelope)). Each names its kind;
//! `docs/asyncapi.yaml` documents the same for other languages.

use serde::{Deserialize, Serialize};

use super::ids::Room;
use crate::bus::BusMessage;

/// An event for sockets: published on `user.direct` (routing key = user id) for a user room,
/// or on `events.topic` (`room.conversation.<id>`) for a conversation room. Every edge that
/// has a socket in the room delivers it, except to the socket named in `except_socket`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deliver {
    pub room: Room,
    pub event: String,
    pub data: serde_json::Value,
    /// The Socket.IO id of the socket that caused the event (the sender of a message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_socket: Option<String>,
}

impl BusMessage for Deliver {
    const KIND: &'static str = "edge.deliver";
}
