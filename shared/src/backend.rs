//! Reaching users from a Rust backend without the HTTP hop (docs/reference.md, Ingress).
//!
//! ```no_run
//! use switchboard::{Bus, Config, Role, Shutdown, backend};
//!
//! # async fn example() -> anyhow::Result<()> {
//! // RABBITMQ_* variables (or switchboard.toml) say where the broker is.
//! let config = Config::load(Role::Backend)?;
//! let shutdown = Shutdown::new();
//! let bus = Bus::start(&config, "my-backend", &shutdown);
//! bus.wait_ready().await;
//!
//! let alice = "alice".parse()?;
//! backend::emit_to_user(&bus, &alice, "order:shipped", serde_json::json!({ "orderId": 42 })).await?;
//! backend::emit_to_room(&bus, &"user:bob".parse()?, "hello", serde_json::json!({})).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/emit.rs` is the same as a program. Each call that sends returns once the broker
//! confirmed the message; an error means it may or may not have been delivered. The calls that
//! ask (a conversation's messages, presence, a user's conversations) wait at most their
//! `timeout` for the worker that answers; every call here is one the HTTP ingress makes too.

use std::collections::HashSet;

use serde::Serialize;

use crate::{
    bus::{Bus, BusError, Durability, RequestError},
    contract::{
        AckError, ConversationId, MatchId, NotificationId, Room, UserId,
        bus::{
            CreateConversation, CreateNotification, Deliver, DeliverBatch, DisconnectUser, EventName,
            MatchCreated, NotificationData, NotificationKind, NotificationText, NotificationTitle,
            PresenceLookup, SyncQuery, UserConversations, UserConversationsQuery,
        },
        client::{MessagesPage, PRESENCE_QUERY_MAX_IDS, PresenceReply, SYNC_MAX_LIMIT},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("data is not serializable: {0}")]
    InvalidData(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Emits `event` with `data` to every socket of `user_id`, on every edge.
pub async fn emit_to_user(
    bus: &Bus,
    user_id: &UserId,
    event: &str,
    data: impl Serialize,
) -> Result<(), EmitError> {
    emit_to_room(bus, &Room::User(user_id.clone()), event, data).await
}

/// Emits `event` with `data` to a room: `user:<id>` or `conversation:<id>`.
pub async fn emit_to_room(
    bus: &Bus,
    room: &Room,
    event: &str,
    data: impl Serialize,
) -> Result<(), EmitError> {
    let event = EventName::try_from(event.to_owned()).map_err(EmitError::InvalidEvent)?;
    let data = serde_json::to_value(data).map_err(|e| EmitError::InvalidData(e.to_string()))?;
    let deliver_all = Deliver {
        rooms: vec![room.clone()],
        event,
        data,
        except_socket: None,
        reply: None,
        traceparent: None,
        receipt: None,
    };
    deliver(bus, deliver_all, Durability::Confirmed).await?;
    Ok(())
}

/// Publishes a delivery once, where every edge holding a socket in one of its rooms receives
/// it: user rooms through `user.direct` with the extra users in the `CC` header, a
/// conversation room through `events.topic` (see [`Deliver`]'s route).
pub async fn deliver(bus: &Bus, deliver: Deliver, durability: Durability) -> Result<(), BusError> {
    if deliver.rooms.is_empty() {
        return Ok(());
    }
    bus.publish(&deliver, durability).await
}

/// Most user keys one [`DeliverBatch`] is addressed to: the `CC` header must stay well inside
/// an AMQP frame.
const BATCH_MAX_USERS: usize = 500;

/// Publishes many deliveries, in order, with as few messages as it can: the deliveries to user
/// rooms go as [`DeliverBatch`]es addressed to the union of their users (at most
/// [`BATCH_MAX_USERS`] each), so an edge receives one message for all the items that concern
/// any of its users, and hands each item to its own sockets of that item's rooms. What a
/// worker's batch fans out costs one broker message per edge, not one per item. Deliveries to
/// a conversation room go one by one. Returns the errors of the publishes that failed.
pub async fn deliver_all(bus: &Bus, deliveries: Vec<Deliver>, durability: Durability) -> Vec<BusError> {
    // Each batch's users as a set, so adding an item costs a lookup per user, not a scan of the
    // batch. (The batch's route, the same users in first-seen order, is its own: see
    // `DeliverBatch`'s `Routed`.)
    let mut batches: Vec<(HashSet<String>, Vec<Deliver>)> = Vec::new();
    let mut singles = Vec::new();
    for delivery in deliveries.into_iter().filter(|d| !d.rooms.is_empty()) {
        let users: Option<Vec<String>> = delivery
            .rooms
            .iter()
            .map(|room| match room {
                Room::User(user) => Some(user.to_string()),
                Room::Conversation(_) => None,
            })
            .collect();
        let Some(users) = users else {
            singles.push(delivery);
            continue;
        };
        let fits = batches.last().is_some_and(|(seen, _)| {
            seen.len() + users.iter().filter(|u| !seen.contains(*u)).count() <= BATCH_MAX_USERS
        });
        if !fits {
            batches.push((HashSet::new(), Vec::new()));
        }
        let Some((seen, items)) = batches.last_mut() else { continue };
        seen.extend(users);
        items.push(delivery);
    }
    // A batch is addressed to the union of its items' users (its route).
    let batched = batches.into_iter().map(|(_, mut items)| async move {
        if items.len() == 1 {
            let Some(single) = items.pop() else { return Ok(()) };
            return deliver(bus, single, durability).await;
        }
        bus.publish(&DeliverBatch { items }, durability).await
    });
    let singles = singles.into_iter().map(|single| deliver(bus, single, durability));
    // Publishes on one channel keep the order they were made in; `join_all` starts them in order.
    let mut errors: Vec<BusError> =
        futures::future::join_all(batched).await.into_iter().filter_map(Result::err).collect();
    errors.extend(futures::future::join_all(singles).await.into_iter().filter_map(Result::err));
    errors
}

/// [`deliver`], confirmed and mandatory: whether any edge had a socket in one of the rooms.
pub async fn deliver_routed(bus: &Bus, deliver: &Deliver) -> Result<bool, BusError> {
    if deliver.rooms.is_empty() {
        return Ok(false);
    }
    bus.publish_routed(deliver).await
}

/// Creates a conversation and returns its id once it is stored (docs/reference.md, Ingress). With a
/// `match_id`, the same match always gives the same conversation. Waits at most `timeout`;
/// `RequestError::Timeout` means it may or may not exist.
pub async fn create_conversation(
    bus: &Bus,
    create: &CreateConversation,
    timeout: std::time::Duration,
) -> Result<ConversationId, RequestError> {
    let created = bus.request(create, timeout).await?;
    Ok(created.conversation_id)
}

/// Announces a match (docs/reference.md, Ingress): the notifier makes one conversation between the
/// two users and a `match` notification for each, however often the same `match_id` comes.
pub async fn publish_match(
    bus: &Bus,
    match_id: &MatchId,
    user_ids: [UserId; 2],
    created_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), BusError> {
    let created = MatchCreated { match_id: match_id.clone(), user_ids, created_at };
    bus.publish(&created, Durability::Confirmed).await
}

/// Puts a notification in a user's inbox; it is delivered as `notification:new` now or at the
/// user's next connect. Returns its id. The texts are checked when they are made (`"Hi".parse()`),
/// by the contract's text rules.
pub async fn notify(
    bus: &Bus,
    user_id: &UserId,
    kind: NotificationKind,
    title: NotificationTitle,
    message: NotificationText,
    data: Option<NotificationData>,
) -> Result<NotificationId, BusError> {
    let id = NotificationId::new();
    let create = CreateNotification { id, user_id: user_id.clone(), kind, title, message, data };
    bus.publish(&create, Durability::Confirmed).await?;
    Ok(id)
}

/// A page of a conversation's messages with `seq > after_seq`, ascending, at most `limit` (1 to
/// 200; more counts as 200), of any conversation that exists, closed ones too
/// (docs/reference.md, Ingress, `GET /api/v1/conversations/{conversationId}/messages`).
/// `hasMore` tells whether to ask again from the page's last `seq`. An unknown conversation is
/// `RequestError::Refused` with `not_found`.
pub async fn conversation_messages(
    bus: &Bus,
    conversation_id: ConversationId,
    after_seq: u64,
    limit: u32,
    timeout: std::time::Duration,
) -> Result<MessagesPage, RequestError> {
    if limit == 0 {
        return Err(RequestError::Refused(AckError::invalid("limit must be at least 1")));
    }
    let query = SyncQuery { conversation_id, user_id: None, after_seq, limit: limit.min(SYNC_MAX_LIMIT) };
    bus.request(&query, timeout).await
}

/// Whether each of 1 to 200 users is online, and when each was last seen going offline:
/// every user named is answered, contacts of no one in particular (docs/reference.md, Ingress,
/// `POST /api/v1/presence/query`).
pub async fn presence(
    bus: &Bus,
    user_ids: Vec<UserId>,
    timeout: std::time::Duration,
) -> Result<PresenceReply, RequestError> {
    if user_ids.is_empty() || user_ids.len() > PRESENCE_QUERY_MAX_IDS {
        return Err(RequestError::Refused(AckError::invalid(format!(
            "userIds must hold 1 to {PRESENCE_QUERY_MAX_IDS} ids"
        ))));
    }
    bus.request(&PresenceLookup { user_id: None, user_ids }, timeout).await
}

/// Every conversation a user takes part in, open or closed, newest first (docs/reference.md,
/// Ingress, `GET /api/v1/users/{userId}/conversations`).
pub async fn user_conversations(
    bus: &Bus,
    user_id: &UserId,
    timeout: std::time::Duration,
) -> Result<UserConversations, RequestError> {
    bus.request(&UserConversationsQuery { user_id: user_id.clone() }, timeout).await
}

/// Ends every socket of a user on every edge: a logout everywhere, a ban (docs/reference.md,
/// Ingress, `DELETE /api/v1/users/{userId}/sockets`). With `revoke_sessions` each edge first
/// forgets the sessions it cached for the user, so delete the user's sessions before calling
/// this, or a reconnect still gets in. Returns once the broker confirmed it.
pub async fn disconnect_user(bus: &Bus, user_id: &UserId, revoke_sessions: bool) -> Result<(), BusError> {
    bus.publish(&DisconnectUser { user_id: user_id.clone(), revoke_sessions }, Durability::Confirmed).await
}
