//! Every bus message decoder: `Envelope::<T>::decode` for each kind of `kinds!` in
//! `switchboard::contract::bus`, the reply decoder (`bus::rpc::decode_reply`) for each response
//! type, and `bus::kind_of`, which picks the decoder on queues that carry several kinds.
//!
//! Input: the first byte picks the decoder (its low seven bits) and how the rest is read (its
//! high bit): as the whole message body, or as the envelope's `data` inside a valid envelope
//! of the right kind, so that fuzzing reaches deep into each body without first having to
//! find the envelope. A message that decodes must re-encode and decode unchanged, and
//! `kind_of` must name its kind.

#![no_main]

use std::sync::Once;

use lapin::message::Delivery;
use libfuzzer_sys::fuzz_target;
use switchboard::{
    bus::{
        BusMessage, Envelope, Inbound, RequestError, kind_of,
        queues::{EdgeInbound, FlushRequest, MatchEvent, PresenceInput, ShardCommand},
        rpc::{Reply, decode_batched_reply, decode_reply},
    },
    contract::{
        bus::*,
        client::{Empty, MessageSent, MessagesPage, NotificationsPage, PresenceReply},
        domain, object,
    },
};
use switchboard_fuzz::{assert_same, pick};

type Decoder = (&'static str, fn(&[u8]));

/// One envelope decoder per bus kind; [`every_kind_is_fuzzed`] holds it to `KINDS`.
static ENVELOPES: &[Decoder] = &[
    (Deliver::KIND, envelope::<Deliver>),
    (DeliverBatch::KIND, envelope::<DeliverBatch>),
    (MembershipQuery::KIND, envelope::<MembershipQuery>),
    (Membership::KIND, envelope::<Membership>),
    (EdgeStopping::KIND, envelope::<EdgeStopping>),
    (SendMessage::KIND, envelope::<SendMessage>),
    (MessageSent::KIND, envelope::<MessageSent>),
    (MarkRead::KIND, envelope::<MarkRead>),
    (Empty::KIND, envelope::<Empty>),
    (SyncQuery::KIND, envelope::<SyncQuery>),
    (MessagesPage::KIND, envelope::<MessagesPage>),
    (CreateConversation::KIND, envelope::<CreateConversation>),
    (ConversationCreated::KIND, envelope::<ConversationCreated>),
    (ConversationClosed::KIND, envelope::<ConversationClosed>),
    (PresenceChange::KIND, envelope::<PresenceChange>),
    (PresenceChanges::KIND, envelope::<PresenceChanges>),
    (EdgeReport::KIND, envelope::<EdgeReport>),
    (ContactsQuery::KIND, envelope::<ContactsQuery>),
    (Contacts::KIND, envelope::<Contacts>),
    (PresenceLookup::KIND, envelope::<PresenceLookup>),
    (PresenceReply::KIND, envelope::<PresenceReply>),
    (MatchCreated::KIND, envelope::<MatchCreated>),
    (Unmatch::KIND, envelope::<Unmatch>),
    (CreateNotification::KIND, envelope::<CreateNotification>),
    (CloseConversation::KIND, envelope::<CloseConversation>),
    (NotificationsQuery::KIND, envelope::<NotificationsQuery>),
    (NotificationsPage::KIND, envelope::<NotificationsPage>),
    (MarkNotificationRead::KIND, envelope::<MarkNotificationRead>),
    (ReplyBatch::KIND, reply_batch),
    (RequestBatch::KIND, request_batch),
    (ConversationOpened::KIND, envelope::<ConversationOpened>),
    (FlushInbox::KIND, envelope::<FlushInbox>),
    (FlushInboxes::KIND, envelope::<FlushInboxes>),
    (NotificationDelivered::KIND, envelope::<NotificationDelivered>),
    (DisconnectUser::KIND, envelope::<DisconnectUser>),
    (UserConversationsQuery::KIND, envelope::<UserConversationsQuery>),
    (UserConversations::KIND, envelope::<UserConversations>),
    (domain::MessageStored::KIND, envelope::<domain::MessageStored>),
    (domain::MessageRead::KIND, envelope::<domain::MessageRead>),
    (domain::UserOnline::KIND, envelope::<domain::UserOnline>),
    (domain::UserOffline::KIND, envelope::<domain::UserOffline>),
    (domain::MatchCreated::KIND, envelope::<domain::MatchCreated>),
    (domain::MatchRemoved::KIND, envelope::<domain::MatchRemoved>),
    (domain::NotificationDelivered::KIND, envelope::<domain::NotificationDelivered>),
    (domain::NotificationRead::KIND, envelope::<domain::NotificationRead>),
];

/// One reply decoder per type that answers a request (`answered by` in `kinds!`).
static REPLIES: &[Decoder] = &[
    (Membership::KIND, reply::<Membership>),
    (MessageSent::KIND, reply::<MessageSent>),
    (Empty::KIND, reply::<Empty>),
    (MessagesPage::KIND, reply::<MessagesPage>),
    (ConversationCreated::KIND, reply::<ConversationCreated>),
    (Contacts::KIND, reply::<Contacts>),
    (PresenceReply::KIND, reply::<PresenceReply>),
    (NotificationsPage::KIND, reply::<NotificationsPage>),
    (UserConversations::KIND, reply::<UserConversations>),
];

fuzz_target!(|data: &[u8]| {
    static CHECK: Once = Once::new();
    CHECK.call_once(every_kind_is_fuzzed);
    let Some((&selector, rest)) = data.split_first() else { return };
    let index = pick(selector & 0x7f, ENVELOPES.len() + REPLIES.len());
    let (kind, decode) = match index.checked_sub(ENVELOPES.len()) {
        None => ENVELOPES[index],
        Some(reply) => REPLIES[reply],
    };
    if selector & 0x80 == 0 {
        decode(rest);
    } else {
        // A valid envelope of the right kind around the fuzzed body.
        let mut wrapped = format!(
            r#"{{"v":1,"kind":"{kind}","id":"01890000-0000-7000-8000-000000000000","sentAt":"2026-01-01T00:00:00Z","data":"#
        )
        .into_bytes();
        wrapped.extend_from_slice(rest);
        wrapped.push(b'}');
        decode(&wrapped);
    }
});

/// `Envelope::<T>::decode`, as every consumer calls it, and each queue's decoder
/// (`Envelope::<Q>::decode_inbound`), which must read the same bytes the same way.
fn envelope<T: BusMessage>(bytes: &[u8]) {
    let decoded = Envelope::<T>::decode(bytes);
    inbound_agrees::<T, EdgeInbound>(bytes, decoded.is_ok());
    inbound_agrees::<T, ShardCommand>(bytes, decoded.is_ok());
    inbound_agrees::<T, PresenceInput>(bytes, decoded.is_ok());
    inbound_agrees::<T, MatchEvent>(bytes, decoded.is_ok());
    inbound_agrees::<T, FlushRequest>(bytes, decoded.is_ok());
    let Ok(envelope) = decoded else { return };
    assert_eq!(envelope.kind, T::KIND);
    assert_eq!(kind_of(&delivery(bytes)).as_deref(), Some(T::KIND), "kind_of reads what decode read");
    let Envelope { v, ref kind, id, sent_at, ref data } = envelope;
    let again = Envelope { v, kind: kind.clone(), id, sent_at, data }.encode();
    let back = Envelope::<T>::decode(&again).expect("a decoded envelope re-encodes into one that decodes");
    assert_eq!((back.v, back.id, back.sent_at), (envelope.v, envelope.id, envelope.sent_at));
    assert_same(T::KIND, &envelope.data, &back.data);
}

/// A queue of several kinds reads a `T` exactly when `Envelope::<T>::decode` does, except that
/// it also refuses bytes that are not UTF-8 (JSON must be), which `decode` lets through inside
/// a field it ignores.
fn inbound_agrees<T: BusMessage, Q: Inbound>(bytes: &[u8], decoded: bool) {
    let read = Envelope::<Q>::decode_inbound(bytes);
    if decoded && Q::KINDS.contains(&T::KIND) && std::str::from_utf8(bytes).is_ok() {
        assert!(
            read.is_ok(),
            "{} reads a {} that decode read: {:?}",
            std::any::type_name::<Q>(),
            T::KIND,
            read.err()
        );
    }
    if let Ok(envelope) = read {
        assert!(Q::KINDS.contains(&envelope.kind.as_str()), "a queue reads only the kinds it carries");
        if envelope.kind == T::KIND {
            assert!(decoded, "{} read a {} that decode refused", std::any::type_name::<Q>(), T::KIND);
        }
    }
}

/// A batch of replies, as a requester reads it: the envelope, then each item as the reply to
/// a `message.send` (what the chat shards batch).
fn reply_batch(bytes: &[u8]) {
    envelope::<ReplyBatch>(bytes);
    let Ok(batch) = Envelope::<ReplyBatch>::decode(bytes) else { return };
    for item in batch.data.replies {
        let _ = decode_batched_reply::<MessageSent>(item.reply);
    }
}

/// A batch of requests, as a chat shard reads it: the envelope, then each item's `data` as the
/// command its `kind` names.
fn request_batch(bytes: &[u8]) {
    envelope::<RequestBatch>(bytes);
    let Ok(batch) = Envelope::<RequestBatch>::decode(bytes) else { return };
    for item in batch.data.requests {
        let data = item.data.get().as_bytes();
        match item.kind.as_str() {
            SendMessage::KIND => item_round_trip::<SendMessage>(data),
            MarkRead::KIND => item_round_trip::<MarkRead>(data),
            _ => {}
        }
    }
}

fn item_round_trip<T: BusMessage>(data: &[u8]) {
    let Ok(command) = object::from_slice::<T>(data) else { return };
    let again = serde_json::to_vec(&command).expect("a decoded command serializes");
    let back = object::from_slice::<T>(&again).expect("a decoded command re-encodes into one that decodes");
    assert_same(T::KIND, &command, &back);
}

/// `decode_reply::<T>`, as a requester reads the reply to its request.
fn reply<T: BusMessage>(bytes: &[u8]) {
    match decode_reply::<T>(bytes) {
        Ok(response) => {
            let again = Envelope::wrap(T::KIND, &Reply::Ok(&response)).encode();
            let back = decode_reply::<T>(&again).expect("a decoded reply re-encodes into one that decodes");
            assert_same(T::KIND, &response, &back);
        }
        Err(RequestError::Refused(error)) => {
            let again = Envelope::wrap(T::KIND, &Reply::<&T>::Error(error.clone())).encode();
            match decode_reply::<T>(&again) {
                Err(RequestError::Refused(back)) => assert_eq!(back, error),
                _ => panic!("a refusal re-encodes into another refusal"),
            }
        }
        Err(_) => {}
    }
}

/// A delivery with `bytes` as its body and no AMQP `type`: `kind_of` reads the envelope.
fn delivery(bytes: &[u8]) -> Delivery {
    Delivery::mock(0, "".into(), "".into(), false, bytes.to_vec())
}

/// The decoders above are every kind of `kinds!`, once each.
fn every_kind_is_fuzzed() {
    let mut fuzzed: Vec<&str> = ENVELOPES.iter().map(|(kind, _)| *kind).collect();
    let mut all = KINDS.to_vec();
    fuzzed.sort_unstable();
    all.sort_unstable();
    assert_eq!(fuzzed, all, "every bus kind has its envelope decoder here");
}
