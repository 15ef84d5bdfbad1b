//! Identifiers. User and match ids are chosen by the host application (1 to 128 characters of
//! `[A-Za-z0-9_.:@-]`); conversation, message and notification ids are UUIDv7 minted here, so
//! they sort by creation time.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not a valid id or room; the message says what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

/// Checks the host application's id alphabet (contract, terms).
fn check_external_id(kind: &str, raw: &str) -> Result<(), InvalidId> {
    if raw.is_empty() || raw.len() > 128 {
        return Err(InvalidId(format!("{kind} must be 1 to 128 characters")));
    }
    if let Some(c) =
        raw.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-')))
    {
        return Err(InvalidId(format!("{kind} contains {c:?}; allowed are A-Z a-z 0-9 _ . : @ -")));
    }
    Ok(())
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(raw: String) -> Result<Self, InvalidId> {
                check_external_id($kind, &raw)?;
                Ok(Self(raw))
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(raw: &str) -> Result<Self, InvalidId> {
                Self::try_from(raw.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

external_id!(
    /// A user of the host application; also the routing key on `user.direct`.
    UserId,
    "userId"
);
external_id!(
    /// A match, named by the host application; matches are idempotent by this id.
    MatchId,
    "matchId"
);

/// Parses a minted id, saying which id was wrong in words a client understands: the uuid
/// crate's own error ("UUID parsing failed: invalid character: found `n` at 1") names neither
/// the field nor what was expected.
fn parse_minted(kind: &str, raw: &str) -> Result<Uuid, InvalidId> {
    Uuid::parse_str(raw).map_err(|_| InvalidId(format!("{kind} must be a UUID")))
}

macro_rules! minted_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(raw: &str) -> Result<Self, InvalidId> {
                parse_minted($kind, raw).map(Self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} as a UUID string", $kind)
                    }
                    fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<$name, E> {
                        raw.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

minted_id!(
    /// A conversation: two or more participants and their ordered messages.
    ConversationId,
    "conversationId"
);
minted_id!(
    /// A stored message.
    MessageId,
    "messageId"
);
minted_id!(
    /// A stored notification in a user's inbox.
    NotificationId,
    "notification id"
);

/// A Socket.IO room as the contract names them (docs/reference.md, Ingress): every socket of a user, or the
/// sockets that joined a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
// Serialized as its string (below), which TypeScript can spell exactly.
#[cfg_attr(
    feature = "typescript",
    derive(ts_rs::TS),
    ts(type = "`user:${UserId}` | `conversation:${ConversationId}`")
)]
pub enum Room {
    User(UserId),
    Conversation(ConversationId),
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Room::User(id) => write!(f, "user:{id}"),
            Room::Conversation(id) => write!(f, "conversation:{id}"),
        }
    }
}

impl FromStr for Room {
    type Err = InvalidId;
    fn from_str(raw: &str) -> Result<Self, InvalidId> {
        if let Some(user) = raw.strip_prefix("user:") {
            return user.parse().map(Room::User);
        }
        if let Some(conversation) = raw.strip_prefix("conversation:") {
            return conversation
                .parse()
                .map(Room::Conversation)
                .map_err(|_| InvalidId("conversation room id must be a UUID".to_owned()));
        }
        Err(InvalidId("room must be user:<userId> or conversation:<conversationId>".to_owned()))
    }
}

impl Serialize for Room {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Room {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_contract_alphabet() {
        for ok in ["a", "user_1", "x.y:z@w-v", &"a".repeat(128)] {
            assert!(ok.parse::<UserId>().is_ok(), "{ok} should parse");
        }
        for bad in ["", "has space", "ünï", "semi;colon", &"a".repeat(129)] {
            assert!(bad.parse::<UserId>().is_err(), "{bad} should not parse");
        }
        let err = serde_json::from_str::<UserId>("\"a b\"").expect_err("invalid");
        assert!(err.to_string().contains("allowed are"), "{err}");
    }

    #[test]
    fn a_bad_minted_id_says_which_id_must_be_a_uuid() {
        let err = serde_json::from_value::<ConversationId>(serde_json::json!("nope")).expect_err("invalid");
        assert_eq!(err.to_string(), "conversationId must be a UUID");
        let err = serde_json::from_value::<MessageId>(serde_json::json!(42)).expect_err("invalid");
        assert_eq!(err.to_string(), "invalid type: integer `42`, expected messageId as a UUID string");
        assert_eq!("x".parse::<NotificationId>(), Err(InvalidId("notification id must be a UUID".into())));
        let id = ConversationId::new();
        assert_eq!(serde_json::from_value::<ConversationId>(serde_json::json!(id)).expect("valid"), id);
    }

    #[test]
    fn rooms_round_trip() {
        let id = ConversationId::new();
        let room: Room = format!("conversation:{id}").parse().expect("valid");
        assert_eq!(room, Room::Conversation(id));
        assert_eq!(room.to_string(), format!("conversation:{id}"));
        assert_eq!("user:alice".parse::<Room>(), Ok(Room::User("alice".parse().expect("valid"))));
        assert!("conversation:nope".parse::<Room>().is_err());
        assert!("lobby".parse::<Room>().is_err());
    }
}
