//! Every client event payload (`client_events!` in `switchboard::contract::client`), decoded as
//! the edge does: Socket.IO hands it a `serde_json::Value`, then `object::from_value::<P>`.
//!
//! Input: the first byte picks the payload type, the rest is the JSON the client sent. An
//! accepted payload must keep the contract's rules and survive a round trip unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use switchboard::contract::{
    client::{
        ConversationRef, MAX_CONTENT_CHARS, MessageRead, MessageSend, MessagesSync, NOTIFICATIONS_MAX_LIMIT,
        NotificationRead, NotificationsList, PRESENCE_QUERY_MAX_IDS, PresenceQuery, SYNC_MAX_LIMIT,
    },
    ids::UserId,
    object, text,
};
use switchboard_fuzz::pick;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else { return };
    // What socketioxide does with the event's first argument.
    let Ok(value) = serde_json::from_slice::<Value>(json) else { return };
    match pick(selector, 7) {
        0 => decode::<MessageSend>(value, |send| {
            let content = send.content.as_str();
            assert_eq!(text::check("content", content, MAX_CONTENT_CHARS).as_deref(), Ok(content));
            if let Some(id) = &send.client_message_id {
                let id = id.as_str();
                assert!((1..=128).contains(&id.chars().count()) && !id.chars().any(char::is_control));
            }
        }),
        // message:read
        1 => decode::<MessageRead>(value, |_| {}),
        // conversation:join, conversation:leave, typing:start, typing:stop
        2 => decode::<ConversationRef>(value, |_| {}),
        3 => decode::<MessagesSync>(value, |sync| {
            assert!(sync.limit != Some(0));
            assert!((1..=SYNC_MAX_LIMIT).contains(&sync.page_size()));
        }),
        4 => decode::<PresenceQuery>(value, |query| {
            assert!((1..=PRESENCE_QUERY_MAX_IDS).contains(&query.user_ids.len()));
            for id in &query.user_ids {
                assert_eq!(id.as_str().parse::<UserId>().as_ref(), Ok(id));
            }
        }),
        5 => decode::<NotificationsList>(value, |list| {
            assert!(list.limit != Some(0));
            assert!((1..=NOTIFICATIONS_MAX_LIMIT).contains(&list.page_size()));
        }),
        _ => decode::<NotificationRead>(value, |_| {}),
    }
});

/// Decodes `value` as the edge does; if it is accepted, checks `rules` and that what the edge
/// passes on (serialized to JSON) decodes to the same payload.
fn decode<P: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(value: Value, rules: impl Fn(&P)) {
    let Ok(payload) = object::from_value::<P>(value) else { return };
    rules(&payload);
    let again = serde_json::to_value(&payload).expect("a payload serializes");
    let again = object::from_value::<P>(again).expect("a serialized payload decodes");
    assert_eq!(payload, again);
}
