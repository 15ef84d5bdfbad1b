//! Payloads are JSON objects (docs/reference.md, Client events and Ingress): the one way every client payload,
//! ingress body and bus body is decoded.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence of its fields in order,
//! so `["<conversationId>", "hi"]` would read as a `message:send`. The contract allows only
//! objects. [`Object`] asks the format for a map and nothing else, so an array (or any other
//! value) is refused with "invalid type: …, expected a JSON object" before the struct sees it.
//! Everything that decodes outside input goes through [`from_value`] or [`from_slice`], so no
//! handler checks the shape itself.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, MapAccess, Visitor, value::MapAccessDeserializer},
};

/// A `T` that was written as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        // The struct reads its fields from the map it was given; a derived struct asks this
        // deserializer for a struct, which it serves from the same map.
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// Decodes a payload that must be a JSON object (a client event's first argument).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, serde_json::Error> {
    serde_json::from_value::<Object<T>>(value).map(|o| o.0)
}

/// Decodes a body that must be a JSON object (an ingress request, a bus message).
pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice::<Object<T>>(bytes).map(|o| o.0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Pair {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[test]
    fn objects_only() {
        assert_eq!(
            from_value::<Pair>(json!({"a": 1, "b": "x"})).expect("object"),
            Pair { a: 1, b: Some("x".into()) }
        );
        assert_eq!(from_slice::<Pair>(br#" {"a": 2} "#).expect("object"), Pair { a: 2, b: None });
        // What serde's derive alone would accept.
        assert!(serde_json::from_value::<Pair>(json!([1, "x"])).is_ok());
        for bad in [json!([1, "x"]), json!([1]), json!(1), json!("a"), json!(null), json!(true)] {
            let error = from_value::<Pair>(bad.clone()).expect_err("not an object");
            assert!(error.to_string().contains("expected a JSON object"), "{bad}: {error}");
        }
        assert!(from_slice::<Pair>(b"[1]").is_err());
        assert!(from_slice::<Pair>(br#"{"a": 1} x"#).is_err(), "trailing input");
    }
}
