//! What the fuzz targets share: the round-trip check and JSON comparison.
//!
//! Every target feeds outside input to the decoder production uses and, when it is accepted,
//! encodes the result the way production would send it on and decodes it again: what one
//! process accepts, the next must accept unchanged. Any failure is a panic, which libFuzzer
//! reports as a crash with the input that caused it.

#![forbid(unsafe_code)]

use serde::Serialize;
use serde_json::Value;

/// The value `selector` picks among `count` choices (the first input byte of a target that
/// covers several types).
pub fn pick(selector: u8, count: usize) -> usize {
    usize::from(selector) % count
}

/// Panics unless `before` and `after` serialize to the same JSON (see [`json_eq`]).
pub fn assert_same<T: Serialize>(what: &str, before: &T, after: &T) {
    let (Ok(before_value), Ok(after_value)) = (serde_json::to_value(before), serde_json::to_value(after))
    else {
        // A raw JSON value kept as text (a batch item's `data`) may hold what a `Value` cannot
        // (an escaped lone surrogate); it is passed on verbatim, and read (and refused) only
        // by its consumer. Then the text must be the same.
        let before = serde_json::to_vec(before).expect("a decoded value serializes as text");
        let after = serde_json::to_vec(after).expect("a decoded value serializes as text");
        assert_eq!(before, after, "{what} changed in a round trip");
        return;
    };
    assert!(
        json_eq(&before_value, &after_value),
        "{what} changed in a round trip:\n{before_value}\n{after_value}"
    );
}

/// JSON equality, except that two floating-point numbers within two units in the last place
/// are equal: serde_json parses floats with best-effort precision (its `float_roundtrip`
/// feature is off), so a float inside free-form `data` may move by an ulp per hop. That is
/// how serde_json is configured, not a fault of the decoders fuzzed here.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y || close(x, y))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn close(x: f64, y: f64) -> bool {
    x.is_sign_negative() == y.is_sign_negative() && x.to_bits().abs_diff(y.to_bits()) <= 2
}
