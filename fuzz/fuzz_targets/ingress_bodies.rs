//! Every ingress request body (`/api/v1/*` of the edge), through the functions the handlers
//! call before any I/O: the parse and every check that answers 400.
//!
//! Input: the first byte picks the route, the rest is the request body. A body the ingress
//! accepts becomes a bus message; that message must keep the route's rules and decode on the
//! other side of the bus (`Envelope::decode`, as the worker or edge does) unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::{
    bus::{BusMessage, Envelope},
    contract::{
        NotificationId, Room, UserId,
        bus::{CreateConversation, NotificationKind, NotificationText, NotificationTitle},
        text,
    },
};
use switchboard_edge::ingress;
use switchboard_fuzz::{assert_same, pick};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match pick(selector, 4) {
        // POST /api/v1/emit
        0 => {
            let Ok(deliver) = ingress::emit_command(body) else { return };
            assert_eq!(deliver.rooms.len(), 1, "one room: userId or room");
            assert!(deliver.except_socket.is_none());
            if let Room::User(user) = &deliver.rooms[0] {
                assert_eq!(user.as_str().parse::<UserId>().as_ref(), Ok(user));
            }
            travels(&deliver);
        }
        // POST /api/v1/conversations
        1 => {
            let Ok(create) = ingress::conversation_command(body) else { return };
            assert_eq!(create.check(), Ok(()));
            assert!((2..=CreateConversation::MAX_PARTICIPANTS).contains(&create.participants.len()));
            assert!(create.match_id.is_none());
            travels(&create);
        }
        // POST /api/v1/matches
        2 => {
            let Ok(created) = ingress::match_command(body) else { return };
            assert_ne!(created.user_ids[0], created.user_ids[1]);
            travels(&created);
        }
        // POST /api/v1/notifications
        _ => {
            let id = NotificationId(Default::default());
            let Ok(create) = ingress::notification_command(body, id) else { return };
            assert_eq!(create.id, id);
            let rules = [
                ("type", create.kind.as_str(), NotificationKind::MAX_CHARS),
                ("title", create.title.as_str(), NotificationTitle::MAX_CHARS),
                ("message", create.message.as_str(), NotificationText::MAX_CHARS),
            ];
            for (field, value, max) in rules {
                assert_eq!(text::check(field, value, max).as_deref(), Ok(value));
            }
            if let Some(data) = &create.data {
                assert_eq!(text::check_json("data", data.as_value()), Ok(()));
            }
            travels(&create);
        }
    }
});

/// What the ingress publishes, the consumer decodes unchanged.
fn travels<M: BusMessage + Clone>(message: &M) {
    let bytes = Envelope::new(message.clone()).encode();
    let decoded = Envelope::<M>::decode(&bytes).expect("an accepted ingress body decodes off the bus");
    assert_eq!(decoded.kind, M::KIND);
    assert_same(M::KIND, message, &decoded.data);
}
