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

use std::collections::{HashMap, HashSet};

use lapin::{
    Channel,
    options::{QueueBindOptions, QueueDeleteOptions},
    types::FieldTable,
};
use switchboard::{
    Bus,
    bus::{BusError, Route, in_time, queues},
    contract::{Room, UserId},
};
use tokio::sync::{Mutex, mpsc, watch};
use uuid::Uuid;

/// A user's first socket here opened (`true`) or the last one closed (`false`).
pub type Transition = (UserId, bool);

/// The edge's queue and the rooms it is bound to.
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
    /// Local sockets per room: a room is bound while its count is above zero.
    counts: HashMap<Room, usize>,
    /// Set at shutdown: the queue is about to be deleted, so unbinding is pointless.
    closing: bool,
    /// Users whose first socket here is bound but whose waiting notifications nobody asked
    /// for yet: the first of their sockets to connect asks (see [`crate::inbox`]). Once per
    /// user here, not per socket: while a user has a socket here, what is created for them
    /// reaches it live.
    unflushed: HashSet<UserId>,
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
    /// on, rooms are bound on this channel. Done under the lock, so a room added meanwhile is
    /// either re-bound here or bound by its own [`Bindings::add`] on the new channel.
    pub async fn open(&self, bus: &Bus, channel: &Channel) -> Result<(), BusError> {
        let mut state = self.state.lock().await;
        bus.declare(channel, &queues::edge(&self.queue)).await?;
        for room in state.counts.keys() {
            bind(channel, &self.queue, room).await?;
        }
        state.channel = Some(channel.clone());
        Ok(())
    }

    /// The channel is gone: nothing can be bound until the next [`Bindings::open`].
    pub async fn lost(&self) {
        self.set_ready(false);
        self.state.lock().await.channel = None;
    }

    /// At shutdown: no more unbinding one by one, the queue goes as a whole.
    pub async fn delete(&self, channel: &Channel) {
        let mut state = self.state.lock().await;
        state.closing = true;
        state.channel = None;
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
    /// changes and `Ok(false)` is returned. Counting and adding happen under one lock, so
    /// concurrent connects cannot overshoot the limit.
    pub async fn add_within(&self, room: &Room, limit: usize) -> Result<bool, BusError> {
        let mut state = self.state.lock().await;
        let count = state.counts.get(room).copied().unwrap_or(0);
        if count >= limit {
            return Ok(false);
        }
        if count == 0 {
            let channel = state
                .channel
                .clone()
                .ok_or_else(|| BusError::Unavailable("the edge's queue is not ready".into()))?;
            bind(&channel, &self.queue, room).await?;
        }
        state.counts.insert(room.clone(), count + 1);
        if let (0, Room::User(user)) = (count, room) {
            state.unflushed.insert(user.clone());
            let _ = self.transitions.send((user.clone(), true));
        }
        Ok(true)
    }

    /// Whether a local socket is in `room`.
    pub async fn has(&self, room: &Room) -> bool {
        self.state.lock().await.counts.contains_key(room)
    }

    /// Whether a socket of `user` that just connected must ask for the user's waiting
    /// notifications: true for the first to connect since the user's first socket here was
    /// bound. Whoever gets true asks.
    pub async fn take_unflushed(&self, user: &UserId) -> bool {
        self.state.lock().await.unflushed.remove(user)
    }

    /// Removes one local socket from `room`, unbinding the queue if it was the last.
    pub async fn remove(&self, room: &Room) {
        let mut state = self.state.lock().await;
        let Some(count) = state.counts.get_mut(room) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        state.counts.remove(room);
        if let Room::User(user) = room {
            state.unflushed.remove(user);
            let _ = self.transitions.send((user.clone(), false));
        }
        if state.closing {
            return;
        }
        if let Some(channel) = state.channel.clone() {
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
    }

    /// The users with at least one socket here.
    pub async fn users(&self) -> Vec<UserId> {
        let state = self.state.lock().await;
        state
            .counts
            .keys()
            .filter_map(|room| match room {
                Room::User(user) => Some(user.clone()),
                Room::Conversation(_) => None,
            })
            .collect()
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
