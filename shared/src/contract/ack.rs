//! The acknowledgement every client event gets (docs/reference.md, Client events): `{ success: true, ...reply }`
//! or `{ success: false, error: { code, message } }`.

use serde::{Deserialize, Serialize};

/// The contract's error codes. A client can act on each: fix the input, stop trying, back off,
/// or retry (`timeout` and `unavailable` are safe to retry with the same `clientMessageId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Invalid,
    Forbidden,
    NotFound,
    RateLimited,
    Unavailable,
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
        }
    }
}

/// A failure as the client sees it. `message` is for people and never carries internals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[error("{code:?}: {message}")]
pub struct AckError {
    pub code: ErrorCode,
    pub message: String,
}

impl AckError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "not allowed")
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable() -> Self {
        Self::new(ErrorCode::Unavailable, "service unavailable, try again")
    }
    pub fn timeout() -> Self {
        Self::new(ErrorCode::Timeout, "no answer in time; the outcome is unknown, retrying is safe")
    }
    pub fn rate_limited() -> Self {
        Self::new(ErrorCode::RateLimited, "too many events, slow down")
    }
}

/// Builds the acknowledgement body for a result: the reply's fields flattened next to
/// `success: true`, or the error.
pub fn ack_body<T: Serialize>(result: &Result<T, AckError>) -> serde_json::Value {
    match result {
        Ok(reply) => {
            let mut body = match serde_json::to_value(reply) {
                Ok(serde_json::Value::Object(map)) => map,
                // Replies are structs; anything else is a programming error, answered generically.
                _ => return failure(&AckError::unavailable()),
            };
            body.insert("success".into(), serde_json::Value::Bool(true));
            serde_json::Value::Object(body)
        }
        Err(error) => failure(error),
    }
}

fn failure(error: &AckError) -> serde_json::Value {
    serde_json::json!({ "success": false, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_contract_shape() {
        #[derive(Serialize)]
        struct Reply {
            seq: i64,
        }
        assert_eq!(
            ack_body::<Reply>(&Ok(Reply { seq: 3 })),
            serde_json::json!({ "success": true, "seq": 3 })
        );
        assert_eq!(
            ack_body::<Reply>(&Err(AckError::invalid("content is empty"))),
            serde_json::json!({ "success": false, "error": { "code": "invalid", "message": "content is empty" } })
        );
        assert_eq!(
            serde_json::to_value(ErrorCode::RateLimited).expect("serializes"),
            serde_json::json!("rate_limited")
        );
    }
}
