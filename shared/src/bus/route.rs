//! Where each bus message goes, declared once by its type.
//!
//! Every message that is published (not a reply, which goes back to its requester's
//! `reply_to`) implements [`Routed`]: it computes its own [`Route`], so [`Bus::publish`] and
//! [`Bus::request`] take the message and nothing else, and a message cannot be sent with
//! another kind's routing key. A kind whose routing key never changes also implements
//! [`FixedRoute`], which is how a queue binds it ([`QueueSpec::carries`]): the binding is read
//! from the type, not written again. The table of kinds, routes and responses is the `kinds!`
//! list in [`contract::bus`](crate::contract::bus).
//!
//! [`Bus::publish`]: super::Bus::publish
//! [`Bus::request`]: super::Bus::request
//! [`QueueSpec::carries`]: super::QueueSpec::carries

use std::borrow::Cow;

use super::{
    BusMessage,
    topology::{EVENTS_TOPIC, USER_DIRECT},
};
use crate::contract::{ConversationId, Room};

/// An exchange, a routing key, and, with RabbitMQ's sender-selected distribution, more keys
/// the same message is also routed by (the `CC` header; a queue bound by several of them still
/// gets one copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub exchange: &'static str,
    pub key: Cow<'static, str>,
    pub also: Vec<String>,
}

impl Route {
    pub const fn fixed(exchange: &'static str, key: &'static str) -> Self {
        Self { exchange, key: Cow::Borrowed(key), also: Vec::new() }
    }

    /// The chat commands of one shard.
    pub fn shard(shard: Shard) -> Self {
        Self { exchange: EVENTS_TOPIC, key: Cow::Owned(shard.key()), also: Vec::new() }
    }

    /// What reaches every edge that holds a socket in `room`.
    pub fn room(room: &Room) -> Self {
        match room {
            Room::User(user) => {
                Self { exchange: USER_DIRECT, key: Cow::Owned(user.to_string()), also: Vec::new() }
            }
            Room::Conversation(id) => {
                Self { exchange: EVENTS_TOPIC, key: Cow::Owned(conversation_room_key(*id)), also: Vec::new() }
            }
        }
    }

    /// The users' rooms, in one message: the first user's key, the others as `CC`.
    pub fn users(mut keys: impl Iterator<Item = String>) -> Self {
        let key = keys.next().unwrap_or_default();
        Self { exchange: USER_DIRECT, key: Cow::Owned(key), also: keys.collect() }
    }
}

/// A message that is published: it says where it goes.
pub trait Routed: BusMessage {
    fn route(&self) -> Route;
}

/// A message whose route never changes, so a queue can be bound to it by its type.
pub trait FixedRoute: Routed {
    const EXCHANGE: &'static str;
    const KEY: &'static str;
}

/// The routing key (and binding) of a conversation room on `events.topic`.
pub fn conversation_room_key(id: ConversationId) -> String {
    format!("room.conversation.{id}")
}

/// One of the [`Shard::COUNT`] parts the chat command stream is split into: each is one queue,
/// read in order by one messages worker at a time, and a conversation's commands always go to
/// the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u32);

impl Shard {
    /// How many shards there are. Every copy of every process must agree, so it is a constant
    /// of the protocol, not a setting.
    pub const COUNT: u32 = 16;

    /// The shard of a conversation: the UUID's low bits (random in UUIDv7) modulo the count.
    pub fn of(conversation: ConversationId) -> Self {
        Self((conversation.0.as_u128() % u128::from(Self::COUNT)) as u32)
    }

    pub fn all() -> impl Iterator<Item = Shard> + Clone {
        (0..Self::COUNT).map(Shard)
    }

    /// Its place in `0..COUNT`.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The routing key, which is also the queue's name.
    pub fn key(self) -> String {
        format!("messages.shard.{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_count_and_name_their_queue() {
        assert_eq!(Shard::all().count(), Shard::COUNT as usize);
        assert_eq!(Shard::all().last().map(Shard::key).as_deref(), Some("messages.shard.15"));
        let id: ConversationId = "00000000-0000-7000-8000-000000000011".parse().expect("uuid");
        assert_eq!(Shard::of(id).index(), 0x11 % 16);
    }

    #[test]
    fn user_rooms_share_one_message() {
        let route = Route::users(["a".to_owned(), "b".to_owned(), "c".to_owned()].into_iter());
        assert_eq!((route.exchange, route.key.as_ref()), (USER_DIRECT, "a"));
        assert_eq!(route.also, ["b", "c"]);
    }
}
