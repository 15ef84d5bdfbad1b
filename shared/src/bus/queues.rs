//! Every queue a process consumes, declared once: its name, its arguments, the kinds it carries
//! (each bound by the kind's own [`FixedRoute`]), and, for a queue of several kinds, the enum
//! its deliveries decode into ([`Inbound`]), so a consumer handles each kind in one `match` arm
//! and an unexpected kind is refused in one place.
//!
//! | queue | consumer | carries |
//! | --- | --- | --- |
//! | `edge.<id>` (exclusive) | each edge | [`EdgeInbound`]: deliveries for the rooms it binds, closed conversations, users to disconnect |
//! | `messages.shard.<n>` | one messages worker at a time | [`ShardCommand`]: sends, reads, batches of them |
//! | `messages.membership`, `.contacts`, `.close`, `.sync`, `.conversations`, `.create` | any messages worker | one request kind each |
//! | `presence.events` | one presence worker at a time | [`PresenceInput`] |
//! | `notifier.matches` | one notifier at a time | [`MatchEvent`] |
//! | `notifier.flush` | any notifier | [`FlushRequest`]: one user's inbox flush, or several users' |
//! | `notifier.notifications`, `.delivered`, `.list`, `.read` | any notifier | one kind each |
//! | `dead.letters` | operators | whatever could never be handled |

use serde::de::DeserializeOwned;

use super::{
    BusMessage, DecodeError, Envelope, QueueSpec, Request,
    route::{FixedRoute, Shard},
};
use crate::contract::{
    bus::{
        CloseConversation, ContactsQuery, ConversationClosed, ConversationOpened, CreateConversation,
        CreateNotification, Deliver, DeliverBatch, DisconnectUser, EdgeReport, EdgeStopping, FlushInbox,
        FlushInboxes, MarkNotificationRead, MarkRead, MatchCreated, MembershipQuery, NotificationDelivered,
        NotificationsQuery, PresenceChange, PresenceChanges, PresenceLookup, RequestBatch, SendMessage,
        SyncQuery, Unmatch, UserConversationsQuery,
    },
    object,
};

/// What a queue of several kinds decodes into: one variant per kind, named after its type.
pub trait Inbound: Sized + Send + 'static {
    /// The kinds this queue carries, for the refusal of any other.
    const KINDS: &'static [&'static str];

    /// The body of a message of `kind`; `None` when the queue does not carry that kind.
    fn decode_body(kind: &str, body: &[u8]) -> Option<Result<Self, serde_json::Error>>;
}

fn body<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    object::from_slice(body)
}

macro_rules! inbound {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {
            $($variant($variant)),+
        }

        impl Inbound for $name {
            const KINDS: &'static [&'static str] = &[$(<$variant as BusMessage>::KIND),+];

            fn decode_body(kind: &str, bytes: &[u8]) -> Option<Result<Self, serde_json::Error>> {
                $(if kind == <$variant as BusMessage>::KIND {
                    return Some(body(bytes).map(Self::$variant));
                })+
                None
            }
        }
    };
}

inbound! {
    /// What an edge's own queue brings: deliveries for its sockets' rooms, one or many in a
    /// message, the conversations that closed, and the users whose sockets must end.
    EdgeInbound { Deliver, DeliverBatch, ConversationClosed, DisconnectUser }
}

inbound! {
    /// A chat shard's commands, alone or as a batch of them from one edge.
    ShardCommand { SendMessage, MarkRead, RequestBatch }
}

inbound! {
    /// The inbox flushes the notifier is asked for: one user's, or several users' from one edge.
    FlushRequest { FlushInbox, FlushInboxes }
}

inbound! {
    /// What the presence worker reads, in order: the edges' changes, reports and stops, the
    /// `presence:query` requests, and the conversations opened (whose online participants are
    /// introduced to each other).
    PresenceInput { PresenceChange, PresenceChanges, EdgeReport, EdgeStopping, PresenceLookup, ConversationOpened }
}

inbound! {
    /// Matches and unmatches, handled in the order they were published.
    MatchEvent { MatchCreated, Unmatch }
}

impl<Q: Inbound> Envelope<Q> {
    /// Reads a message of any kind `Q` carries; a kind it does not carry is
    /// [`DecodeError::NotCarried`].
    pub fn decode_inbound(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw = Envelope::<Box<serde_json::value::RawValue>>::decode_unchecked(bytes)?;
        let data = Q::decode_body(&raw.kind, raw.data.get().as_bytes())
            .ok_or_else(|| DecodeError::NotCarried { kind: raw.kind.clone() })??;
        Ok(Envelope { v: raw.v, kind: raw.kind, id: raw.id, sent_at: raw.sent_at, data })
    }
}

/// Requests nobody waits for any more are dropped by the broker after this: a requester's
/// timeout is far shorter.
const REQUEST_TTL_MS: u32 = 60_000;

/// A queue that answers one kind of request, served by any copy of its worker.
fn requests<R: Request + FixedRoute>(name: &str) -> QueueSpec {
    QueueSpec::durable(name).carries::<R>().message_ttl_ms(REQUEST_TTL_MS)
}

/// An edge's delivery queue: exclusive to the edge, bound to `conversation.closed` and
/// `user.disconnect` here and to each room it has sockets in while it has them.
pub fn edge(name: &str) -> QueueSpec {
    QueueSpec::exclusive(name).carries::<ConversationClosed>().carries::<DisconnectUser>()
}

/// The most messages a shard queue holds. Each edge already keeps at most
/// `CHAT_INFLIGHT_PER_SHARD` commands in flight per shard; this bounds what many edges (or
/// other publishers) can pile up together. Past it the broker nacks new commands, and their
/// senders are answered `unavailable` at once.
pub const SHARD_QUEUE_MAX: u32 = 20_000;

/// A chat shard's queue: durable, bound to its routing key, one active consumer at a time
/// (which keeps each conversation's order), bounded ([`SHARD_QUEUE_MAX`]).
pub fn shard(shard: Shard) -> QueueSpec {
    let key = shard.key();
    QueueSpec::durable(&key)
        .bind(super::topology::EVENTS_TOPIC, key.clone())
        .single_active_consumer()
        .bounded(SHARD_QUEUE_MAX)
}

pub fn membership() -> QueueSpec {
    requests::<MembershipQuery>("messages.membership")
}

pub fn contacts() -> QueueSpec {
    requests::<ContactsQuery>("messages.contacts")
}

pub fn close_conversation() -> QueueSpec {
    requests::<CloseConversation>("messages.close")
}

pub fn sync() -> QueueSpec {
    requests::<SyncQuery>("messages.sync")
}

pub fn user_conversations() -> QueueSpec {
    requests::<UserConversationsQuery>("messages.conversations")
}

pub fn create_conversation() -> QueueSpec {
    requests::<CreateConversation>("messages.create")
}

/// The presence worker's one input, in order: one active consumer, the others stand by. What
/// waited longer than a minute (no worker ran) is stale: the edges' next reports restate it.
pub fn presence_events() -> QueueSpec {
    QueueSpec::durable("presence.events")
        .carries::<PresenceChange>()
        .carries::<PresenceChanges>()
        .carries::<EdgeReport>()
        .carries::<EdgeStopping>()
        .carries::<PresenceLookup>()
        .carries::<ConversationOpened>()
        .single_active_consumer()
        .message_ttl_ms(60_000)
}

/// Matches and unmatches in one queue, one active consumer: handled in publish order.
///
/// Declared by every process at every connection, like the notifier's other work queues, not only by the
/// notifier: the contract lets the notifier scale to zero, and a match published while no
/// notifier ever ran must still wait in its queue.
pub fn matches() -> QueueSpec {
    QueueSpec::durable("notifier.matches")
        .carries::<MatchCreated>()
        .carries::<Unmatch>()
        .single_active_consumer()
}

/// Notifications to store and deliver (see [`matches`] on who declares it).
pub fn notifications() -> QueueSpec {
    QueueSpec::durable("notifier.notifications").carries::<CreateNotification>()
}

/// A connect's request for the user's undelivered notifications. No expiry, and declared by
/// every process like [`matches`]: it waits for a notifier.
pub fn flush_inbox() -> QueueSpec {
    QueueSpec::durable("notifier.flush").carries::<FlushInbox>().carries::<FlushInboxes>()
}

/// The edges' receipts of the notifications a socket got (see [`matches`] on who declares it).
pub fn delivered_notifications() -> QueueSpec {
    QueueSpec::durable("notifier.delivered").carries::<NotificationDelivered>()
}

pub fn notifications_list() -> QueueSpec {
    requests::<NotificationsQuery>("notifier.list")
}

pub fn notification_read() -> QueueSpec {
    requests::<MarkNotificationRead>("notifier.read")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::bus::Unmatch;

    #[test]
    fn a_queue_reads_the_kinds_it_carries_and_refuses_others() {
        let unmatch = Envelope::new(Unmatch { match_id: "m1".parse().expect("id") }).encode();
        let read = Envelope::<MatchEvent>::decode_inbound(&unmatch).expect("carried");
        assert!(matches!(read.data, MatchEvent::Unmatch(ref u) if u.match_id.as_str() == "m1"));
        assert!(matches!(
            Envelope::<PresenceInput>::decode_inbound(&unmatch),
            Err(DecodeError::NotCarried { ref kind }) if kind == "match.remove"
        ));
        let array_body = br#"{"v":1,"kind":"match.remove","id":"00000000-0000-0000-0000-000000000000","sentAt":"2026-01-01T00:00:00Z","data":["m1"]}"#;
        assert!(matches!(Envelope::<MatchEvent>::decode_inbound(array_body), Err(DecodeError::Malformed(_))));
        assert_eq!(MatchEvent::KINDS, ["match.created", "match.remove"]);
    }

    #[test]
    fn queues_bind_the_routes_of_their_kinds() {
        let presence = presence_events();
        let keys: Vec<&str> = presence.bindings.iter().map(|(_, key)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "presence.change",
                "presence.report",
                "edge.stopping",
                "rpc.presence.query",
                "conversation.opened"
            ]
        );
    }
}
