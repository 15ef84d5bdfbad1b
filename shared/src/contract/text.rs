//! The rules for text that people write and other people read: message content and a
//! notification's type, title, message and the strings inside its `data`.
//!
//! - **Trimmed** of surrounding white space, then 1 to `max` characters.
//! - **No control characters** but newline and tab. NUL in particular: PostgreSQL refuses it in
//!   `text` and `jsonb`, so letting it through would turn one message into a database error.
//!   Carriage returns are refused too: clients send `\n` line breaks (a browser's textarea
//!   already does).
//! - **Bidirectional controls must be balanced.** The embeddings and overrides (U+202A to
//!   U+202E) and the isolates (U+2066 to U+2069) are how right-to-left writers mix scripts, so
//!   they are allowed, but each one opened must be closed (by U+202C or U+2069) inside the same
//!   text, properly nested. An unclosed override would reverse whatever a client shows after
//!   the text (the sender's name, the next message), which is how such characters are used to
//!   spoof.
//! - **Something visible.** Text made only of white space and invisible characters (zero-width
//!   spaces and joiners, bidi marks, variation selectors, the Hangul fillers, the Braille
//!   blank, tags) is empty and refused, like text made only of spaces.
//!
//! A string that breaks a rule is `invalid`, with a message that says which rule; nothing is
//! silently rewritten except the trimming.

use serde_json::Value;

/// Whether `c` shows nothing by itself: Unicode's default-ignorable code points and the blank
/// characters that are commonly used as invisible ones.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// The control characters text may hold.
fn allowed_control(c: char) -> bool {
    matches!(c, '\n' | '\t')
}

/// Checks the characters of `text` (control characters and bidi balance), without trimming or
/// length rules: what every string inside a notification's `data` must pass.
pub fn check_characters(field: &str, text: &str) -> Result<(), String> {
    // Open bidi scopes, innermost last: `true` for an isolate, `false` for an embedding or
    // override.
    let mut open: Vec<bool> = Vec::new();
    for c in text.chars() {
        if c.is_control() && !allowed_control(c) {
            return Err(format!(
                "{field} contains the control character U+{:04X}; only newline and tab are allowed",
                c as u32
            ));
        }
        match c {
            '\u{202A}'..='\u{202B}' | '\u{202D}'..='\u{202E}' => open.push(false),
            '\u{2066}'..='\u{2068}' => open.push(true),
            '\u{202C}' if open.last() == Some(&false) => {
                open.pop();
            }
            '\u{2069}' if open.last() == Some(&true) => {
                open.pop();
            }
            '\u{202C}' | '\u{2069}' => {
                return Err(format!("{field} closes a bidirectional formatting scope it never opened"));
            }
            _ => {}
        }
    }
    if !open.is_empty() {
        return Err(format!("{field} leaves a bidirectional formatting character unclosed"));
    }
    Ok(())
}

/// Checks `raw` against every rule and returns it trimmed.
pub fn check(field: &str, raw: &str, max_chars: usize) -> Result<String, String> {
    let trimmed = raw.trim();
    check_characters(field, trimmed)?;
    if trimmed.chars().all(invisible) {
        return Err(format!("{field} is empty"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(format!("{field} is longer than {max_chars} characters"));
    }
    Ok(trimmed.to_owned())
}

/// Checks every string of a JSON value, keys included (a notification's `data`).
pub fn check_json(field: &str, value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) => check_characters(field, s),
        Value::Array(items) => items.iter().try_for_each(|v| check_json(field, v)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_characters(field, k)?;
            check_json(field, v)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Defines a text type: a `String` that passed [`check`] with its field name and limit, and
/// deserializes only if it does.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest text allowed, in characters after trimming.
            pub const MAX_CHARS: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(raw: String) -> Result<Self, String> {
                $crate::contract::text::check($field, &raw, $max).map(Self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, String> {
                $crate::contract::text::check($field, raw, $max).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(text: $name) -> String {
                text.0
            }
        }
    };
}
pub(crate) use text_type;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn control_characters_but_newline_and_tab_are_refused() {
        assert_eq!(check("content", " a\n\tb ", 10).expect("newline and tab"), "a\n\tb");
        for bad in ["a\u{0}b", "a\rb", "\u{7}", "a\u{1B}[31m", "a\u{7F}", "a\u{85}b", "a\u{9B}b"] {
            let error = check("content", bad, 100).expect_err(bad);
            assert!(error.contains("control character"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn invisible_only_is_empty() {
        for empty in
            ["", "   ", "\u{200B}", "\u{200B}\u{200D}\u{FEFF}", "\u{3164}", "\u{2800} \u{2800}", "\u{E0041}"]
        {
            assert_eq!(check("content", empty, 100), Err("content is empty".into()), "{empty:?}");
        }
        for visible in ["a", "\u{200B}a", "👍", "\u{2066}שלום\u{2069}"] {
            assert!(check("content", visible, 100).is_ok(), "{visible:?}");
        }
    }

    #[test]
    fn bidi_controls_must_be_balanced() {
        assert!(check("content", "abc \u{202E}def\u{202C} ghi", 100).is_ok());
        assert!(check("content", "\u{2067}\u{202B}x\u{202C}\u{2069}", 100).is_ok());
        for bad in
            ["\u{202E}gnp.exe", "x\u{2066}y", "\u{202C}x", "x\u{2069}", "\u{2066}\u{202A}x\u{2069}\u{202C}"]
        {
            assert!(check("content", bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn length_counts_characters_after_trimming() {
        assert!(check("title", &format!("  {}  ", "é".repeat(5)), 5).is_ok());
        assert!(check("title", &"é".repeat(6), 5).is_err());
    }

    #[test]
    fn json_strings_and_keys_are_checked() {
        assert!(check_json("data", &json!({"a": ["b\nc", 1, null, {"d": true}]})).is_ok());
        assert!(check_json("data", &json!({"a": ["b\u{0}"]})).is_err());
        assert!(check_json("data", &json!({"k\u{0}": 1})).is_err());
        assert!(check_json("data", &json!("\u{202E}")).is_err());
    }
}
