//! The one versioned envelope every bus message travels in.
//!
//! ```json
//! { "v": 1, "kind": "edge.deliver", "id": "0193…", "sentAt": "2026-11-25T21:00:00Z", "data": { … } }
//! ```
//!
//! `kind` names the body's type ([`BusMessage::KIND`]) and is also set as the AMQP `type`
//! property; `id` is the AMQP `message_id`. A consumer refuses a body whose `v` it does not
//! know or whose `kind` is not the one it expects, rather than guessing: such a message is
//! rejected without requeue (it would fail again) and logged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::contract::object::{self, Object};

/// The envelope version this build writes and reads.
pub const VERSION: u16 = 1;

/// A body that travels on the bus.
pub trait BusMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The envelope's `kind`, unique across the system and listed in the AsyncAPI document.
    const KIND: &'static str;
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    pub v: u16,
    pub kind: String,
    pub id: Uuid,
    pub sent_at: DateTime<Utc>,
    pub data: T,
}

/// Why a body could not be read. Never worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("envelope version {0} is not supported (this build reads {VERSION})")]
    Version(u16),
    #[error("expected a {expected} message, got {actual}")]
    Kind { expected: &'static str, actual: String },
    #[error("this queue does not carry {kind} messages")]
    NotCarried { kind: String },
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The fields every envelope version has.
#[derive(Deserialize)]
struct Header {
    v: u16,
    kind: String,
}

impl<T: Serialize> Envelope<T> {
    /// Wraps a body (or a reference to one) under the given kind.
    pub fn wrap(kind: &str, data: T) -> Self {
        Self { v: VERSION, kind: kind.to_owned(), id: Uuid::now_v7(), sent_at: Utc::now(), data }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing our own types into JSON cannot fail: no map has non-string keys.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl<T: BusMessage> Envelope<T> {
    pub fn new(data: T) -> Self {
        Self::wrap(T::KIND, data)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: Header = object::from_slice(bytes)?;
        if header.v != VERSION {
            return Err(DecodeError::Version(header.v));
        }
        if header.kind != T::KIND {
            return Err(DecodeError::Kind { expected: T::KIND, actual: header.kind });
        }
        Self::decode_objects(bytes)
    }
}

impl<T: DeserializeOwned> Envelope<T> {
    /// The envelope and its body, both as JSON objects only (see [`object`]).
    pub(crate) fn decode_objects(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope<Object<T>> = object::from_slice(bytes)?;
        let Envelope { v, kind, id, sent_at, data: Object(data) } = envelope;
        Ok(Envelope { v, kind, id, sent_at, data })
    }
}

impl Envelope<Box<serde_json::value::RawValue>> {
    /// An envelope of this version whatever its kind, its body still unread (a queue of several
    /// kinds reads it once it knows which).
    pub(crate) fn decode_unchecked(bytes: &[u8]) -> Result<Self, DecodeError> {
        match object::from_slice::<Self>(bytes) {
            Ok(envelope) if envelope.v == VERSION => Ok(envelope),
            Ok(envelope) => Err(DecodeError::Version(envelope.v)),
            // Another version may have another shape: say which version it was if it says.
            Err(error) => match object::from_slice::<Header>(bytes) {
                Ok(header) if header.v != VERSION => Err(DecodeError::Version(header.v)),
                _ => Err(DecodeError::Malformed(error)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl BusMessage for Ping {
        const KIND: &'static str = "test.ping";
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Pong {}
    impl BusMessage for Pong {
        const KIND: &'static str = "test.pong";
    }

    #[test]
    fn round_trip_and_refusals() {
        let bytes = Envelope::new(Ping { n: 7 }).encode();
        let back = Envelope::<Ping>::decode(&bytes).expect("decodes");
        assert_eq!(back.data, Ping { n: 7 });
        assert_eq!(back.kind, "test.ping");
        assert!(matches!(Envelope::<Pong>::decode(&bytes), Err(DecodeError::Kind { .. })));
        let future = br#"{"v":2,"kind":"test.ping","id":"00000000-0000-0000-0000-000000000000","sentAt":"2026-01-01T00:00:00Z","data":{"n":1}}"#;
        assert!(matches!(Envelope::<Ping>::decode(future), Err(DecodeError::Version(2))));
        assert!(matches!(Envelope::<Ping>::decode(b"nope"), Err(DecodeError::Malformed(_))));
        // Objects only, the envelope and its body.
        let array_body = br#"{"v":1,"kind":"test.ping","id":"00000000-0000-0000-0000-000000000000","sentAt":"2026-01-01T00:00:00Z","data":[1]}"#;
        assert!(matches!(Envelope::<Ping>::decode(array_body), Err(DecodeError::Malformed(_))));
        let array_envelope =
            br#"[1,"test.ping","00000000-0000-0000-0000-000000000000","2026-01-01T00:00:00Z",{"n":1}]"#;
        assert!(matches!(Envelope::<Ping>::decode(array_envelope), Err(DecodeError::Malformed(_))));
    }
}
