//! This edge's queue and its bindings: which rooms' deliveries reach this process.
//!
//! Each edge process has its own queue, `edge.<edge id>`, exclusive to its connection: when
//! the edge dies, the broker deletes the queue and every binding with it, so a crashed or
//! restarted edge leaves nothing stale behind. The queue is bound
//! - on `user.direct` with a user's id while that user has at least one socket here, and
//! - on `events.topic` with `room.conversation.<id>` while a socket here has joined that room,
//!
//! and only then, so an edge receives what its sockets need and nothing else. Bindings are
//! reference-counted per room: the first local socket binds, the last one to leave unbinds.
//!
//! **No lost window.** A socket's user binding is made (and confirmed by the broker's
//! `bind-ok`) in the connect middleware, before the client is sent `connect`, and the socket
//! joins its `user:<id>` room in the same step. Anything published after the client saw
//! `connect` is therefore routed to this queue and reaches the socket.
//!
//! **Reconnection.** When the channel dies, the consumer ([`crate::inbound`]) calls
//! [`Bindings::open`] on a new one: the queue is declared again and every room that still has
//! local sockets re-bound before anything is consumed. While the queue is down, new sockets are
//! refused (`unavailable`) rather than admitted without a binding, since their `connect` would
//! promise a delivery we could not make.
//!
//! The counts also say who is here: a user's first socket opening and their last one closing
//! are [`Transition`]s, which [`crate::presence`] reports.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::{StreamExt, TryStreamExt};
use lapin::{
    Channel,
    options::{QueueBindOptions, QueueDeleteOptions},
    types::FieldTable,
};
use switchboard::{
    Bus,
    bus::{BusError, Route, in_time, queues},
    contract::{Room, UserId},
    sync::lock,
};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// A user's first socket here opened (`true`) or the last one closed (`false`).
pub type Transition = (UserId, bool);

/// How many rooms are re-bound at once when the queue comes back.
const REBIND_AT_ONCE: usize = 64;

/// The edge's queue and the rooms it is bound to.
///
/// **Concurrency.** Each room has its own slot, locked across its `queue.bind` or
/// `queue.unbind` round trip, so one room's binds and unbinds reach the broker in the order
/// they were decided, while different rooms (many users connecting at once) bind in parallel.
/// The map of slots is locked only for a lookup. A slot lives while its room has sockets here
/// (and during the first bind or last unbind); one that has been given up is marked `gone`, and
/// whoever waited for it starts again with a fresh slot.
pub struct Bindings {
    pub edge_id: Uuid,
    /// `edge.<edge id>`.
    pub queue: String,
    state: Mutex<State>,
    /// True while the queue is declared, bound and consumed.
    ready: watch::Sender<bool>,
    /// Told when a user's first socket here opens or the last one closes (presence).
    transitions: mpsc::UnboundedSender<Transition>,
}

#[derive(Default)]
struct State {
    /// The channel on the connection that owns the exclusive queue; `None` while it is down.
    channel: Option<Channel>,
    /// One slot per room that has (or is getting, or is losing) a local socket.
    rooms: HashMap<Room, Arc<tokio::sync::Mutex<Slot>>>,
    /// The users with at least one socket here (their room bound and counted).
    users: HashSet<UserId>,
    /// Set at shutdown: the queue is about to be deleted, so unbinding is pointless.
    closing: bool,
    /// Users whose first socket here is bound but whose waiting notifications nobody asked
    /// for yet: the first of their sockets to connect asks (see [`crate::inbox`]). Once per
    /// user here, not per socket: while a user has a socket here, what is created for them
    /// reaches it live.
    unflushed: HashSet<UserId>,
}

/// One room's local sockets: the room is bound while `count` is above zero.
#[derive(Default)]
struct Slot {
    count: usize,
    /// Taken out of the map: a new slot stands for the room now.
    gone: bool,
}

impl Bindings {
    pub fn new(transitions: mpsc::UnboundedSender<Transition>) -> Self {
        let edge_id = Uuid::now_v7();
        let (ready, _) = watch::channel(false);
        Self { edge_id, queue: format!("edge.{edge_id}"), state: Mutex::default(), ready, transitions }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Set by the consumer: true once it consumes, false when the queue is lost.
    pub fn set_ready(&self, ready: bool) {
        self.ready.send_replace(ready);
    }

    /// Declares the queue on `channel` and binds every room that has local sockets; from then
    /// on, rooms are bound on this channel. A room whose first socket comes meanwhile sees the
    /// new channel and binds itself; one being bound on the old channel fails with it and is
    /// refused.
    pub async fn open(&self, bus: &Bus, channel: &Channel) -> Result<(), BusError> {
        bus.declare(channel, &queues::edge(&self.queue)).await?;
        let slots: Vec<(Room, Arc<tokio::sync::Mutex<Slot>>)> = {
            let mut state = lock(&self.state);
            state.channel = Some(channel.clone());
            state.rooms.iter().map(|(room, slot)| (room.clone(), slot.clone())).collect()
        };
        futures::stream::iter(slots)
            .map(|(room, slot)| async move {
                let slot = slot.lock().await;
                if slot.gone || slot.count == 0 { Ok(()) } else { bind(channel, &self.queue, &room).await }
            })
            .buffer_unordered(REBIND_AT_ONCE)
            .try_collect::<()>()
            .await
    }

    /// The channel is gone: nothing can be bound until the next [`Bindings::open`].
    pub fn lost(&self) {
        self.set_ready(false);
        lock(&self.state).channel = None;
    }

    /// At shutdown, before the sockets close: no more unbinding one by one, the queue goes as
    /// a whole.
    pub fn closing(&self) {
        lock(&self.state).closing = true;
    }

    /// At shutdown: the queue goes as a whole.
    pub async fn delete(&self, channel: &Channel) {
        {
            let mut state = lock(&self.state);
            state.closing = true;
            state.channel = None;
        }
        self.set_ready(false);
        let deleted = in_time(
            "deleting the queue",
            channel.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()),
        );
        if let Err(error) = deleted.await {
            tracing::warn!(queue = %self.queue, %error, "could not delete the delivery queue");
        }
    }

    /// Adds one local socket to `room`, binding the queue if it is the first. Returns once the
    /// broker confirmed the binding.
    pub async fn add(&self, room: &Room) -> Result<(), BusError> {
        self.add_within(room, usize::MAX).await.map(drop)
    }

    /// [`Bindings::add`], unless `room` already has `limit` local sockets: then nothing
    /// changes and `Ok(false)` is returned. Counting and adding happen under the room's lock,
    /// so concurrent connects cannot overshoot the limit.
    pub async fn add_within(&self, room: &Room, limit: usize) -> Result<bool, BusError> {
        loop {
            let slot = lock(&self.state).rooms.entry(room.clone()).or_default().clone();
            let mut held = slot.lock().await;
            if held.gone {
                continue;
            }
            if held.count >= limit {
                if held.count == 0 {
                    self.give_up(room, &slot, &mut held);
                }
                return Ok(false);
            }
            if held.count == 0 {
                // Read now, not before the wait for the slot: the queue may have come back.
                let channel = lock(&self.state).channel.clone();
                let bound = match channel {
                    Some(channel) => bind(&channel, &self.queue, room).await,
                    None => Err(BusError::Unavailable("the edge's queue is not ready".into())),
                };
                if let Err(error) = bound {
                    self.give_up(room, &slot, &mut held);
                    return Err(error);
                }
            }
            held.count += 1;
            if let (1, Room::User(user)) = (held.count, room) {
                let mut state = lock(&self.state);
                state.users.insert(user.clone());
                state.unflushed.insert(user.clone());
                let _ = self.transitions.send((user.clone(), true));
            }
            return Ok(true);
        }
    }

    /// Whether `user` has a socket here.
    pub fn has_user(&self, user: &UserId) -> bool {
        lock(&self.state).users.contains(user)
    }

    /// Whether a socket of `user` that just connected must ask for the user's waiting
    /// notifications: true for the first to connect since the user's first socket here was
    /// bound. Whoever gets true asks.
    pub fn take_unflushed(&self, user: &UserId) -> bool {
        lock(&self.state).unflushed.remove(user)
    }

    /// Removes one local socket from `room`, unbinding the queue if it was the last.
    pub async fn remove(&self, room: &Room) {
        let Some(slot) = lock(&self.state).rooms.get(room).cloned() else { return };
        let mut held = slot.lock().await;
        if held.gone || held.count == 0 {
            return;
        }
        held.count -= 1;
        if held.count > 0 {
            return;
        }
        let channel = {
            let mut state = lock(&self.state);
            if let Room::User(user) = room {
                state.users.remove(user);
                state.unflushed.remove(user);
                let _ = self.transitions.send((user.clone(), false));
            }
            if state.closing { None } else { state.channel.clone() }
        };
        // Unbound before the slot is given up: a socket of the room that comes meanwhile waits
        // for this slot, then binds again, after the unbind.
        if let Some(channel) = channel {
            let Route { exchange, key, .. } = Route::room(room);
            let unbound = in_time(
                "unbinding a room",
                channel.queue_unbind(
                    self.queue.as_str().into(),
                    exchange.into(),
                    key.as_ref().into(),
                    FieldTable::default(),
                ),
            )
            .await;
            if let Err(error) = unbound {
                // The channel died: the re-bind after reconnection only binds rooms still counted.
                tracing::warn!(%room, %error, "could not unbind a room");
            }
        }
        self.give_up(room, &slot, &mut held);
    }

    /// Takes a slot with no socket out of the map, unless another already stands for the room.
    fn give_up(&self, room: &Room, slot: &Arc<tokio::sync::Mutex<Slot>>, held: &mut Slot) {
        held.gone = true;
        let mut state = lock(&self.state);
        if state.rooms.get(room).is_some_and(|current| Arc::ptr_eq(current, slot)) {
            state.rooms.remove(room);
        }
    }

    /// The users with at least one socket here.
    pub fn users(&self) -> Vec<UserId> {
        lock(&self.state).users.iter().cloned().collect()
    }
}

async fn bind(channel: &Channel, queue: &str, room: &Room) -> Result<(), BusError> {
    let Route { exchange, key, .. } = Route::room(room);
    let bound = channel.queue_bind(
        queue.into(),
        exchange.into(),
        key.as_ref().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    in_time("binding a room", bound).await
}
