//! One connected socket's state, kept in its extensions: who it is, its rate limit, the
//! conversations it joined, where it is typing, and the order of its events ([`Turn`]).
//!
//! Socket.IO hands each event to its own task, so two events of one socket may run in either
//! order. A [`Turn`] taken while the event is extracted (in arrival order, before the task
//! starts) restores that order for the handlers that need it (`message:send` and
//! `message:read`, see [`crate::events::messages`]).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use socketioxide::handler::FromMessageParts;
use switchboard::{
    Config,
    contract::{ConversationId, UserId},
    sync::lock,
};
use tokio::{sync::Notify, task::AbortHandle};

/// What the edge knows about one connected socket, kept in its extensions.
pub struct Client {
    pub user: UserId,
    limiter: DefaultDirectRateLimiter,
    /// The conversations this socket joined (and so the room bindings it holds).
    joined: Mutex<HashSet<ConversationId>>,
    /// The pending expiry of each conversation this socket is typing in.
    typing: Mutex<HashMap<ConversationId, AbortHandle>>,
    /// Hands out turns in the order the socket's events arrive.
    order: Arc<Order>,
    /// Set by whoever releases what admitting the socket took ([`Client::take_release`]), so
    /// it is released once.
    released: AtomicBool,
}

impl Client {
    pub fn new(user: UserId, config: &Config) -> Self {
        let per_second = NonZeroU32::new(config.rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            user,
            limiter: RateLimiter::direct(quota),
            joined: Mutex::default(),
            typing: Mutex::default(),
            order: Arc::default(),
            released: AtomicBool::new(false),
        }
    }

    /// Records that the socket is typing in `id` until `expiry` fires (replacing an earlier one).
    pub fn set_typing(&self, id: ConversationId, expiry: AbortHandle) {
        if let Some(previous) = lock(&self.typing).insert(id, expiry) {
            previous.abort();
        }
    }

    /// Forgets the typing state of `id`; true if the socket was typing there.
    pub fn clear_typing(&self, id: ConversationId) -> bool {
        lock(&self.typing).remove(&id).map(|expiry| expiry.abort()).is_some()
    }

    /// Called by the expiry itself: true if it was still the current one.
    pub fn typing_expired(&self, id: ConversationId) -> bool {
        lock(&self.typing).remove(&id).is_some()
    }

    /// Takes one event from the socket's token bucket; false when it is empty.
    pub fn allow_event(&self) -> bool {
        self.limiter.check().is_ok()
    }

    pub fn has_joined(&self, id: ConversationId) -> bool {
        self.joined().contains(&id)
    }

    /// Records a join; false if it was already recorded.
    pub fn mark_joined(&self, id: ConversationId) -> bool {
        self.joined().insert(id)
    }

    /// Records a leave; false if the socket had not joined.
    pub fn mark_left(&self, id: ConversationId) -> bool {
        self.joined().remove(&id)
    }

    /// The conversations the socket is in now.
    pub fn joined_now(&self) -> Vec<ConversationId> {
        self.joined().iter().copied().collect()
    }

    /// True for the first caller only: whoever gets it gives back what admitting the socket
    /// took (see `connection::release`).
    pub fn take_release(&self) -> bool {
        !self.released.swap(true, Ordering::SeqCst)
    }

    fn joined(&self) -> std::sync::MutexGuard<'_, HashSet<ConversationId>> {
        lock(&self.joined)
    }
}

/// The order of one socket's events: hands out turns in arrival order and serves them in it.
#[derive(Default)]
pub struct Order {
    issued: AtomicU64,
    state: Mutex<OrderState>,
    changed: Notify,
}

#[derive(Default)]
struct OrderState {
    /// The turn being served: every earlier one is done.
    serving: u64,
    /// Later turns already done, waiting for the earlier ones.
    done: BTreeSet<u64>,
}

/// One event's place in its socket's order. Dropping it (done, or never needed) lets the next
/// turn proceed.
pub struct Turn {
    order: Arc<Order>,
    number: u64,
}

impl Turn {
    /// Waits until every earlier event of the socket is done with its turn.
    pub async fn wait(&self) {
        loop {
            let changed = self.order.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if lock(&self.order.state).serving == self.number {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = lock(&self.order.state);
        state.done.insert(self.number);
        loop {
            let serving = state.serving;
            if !state.done.remove(&serving) {
                break;
            }
            state.serving = serving + 1;
        }
        drop(state);
        self.order.changed.notify_waiters();
    }
}

impl<A: socketioxide::adapter::Adapter> FromMessageParts<A> for Turn {
    type Error = std::convert::Infallible;
    fn from_message_parts(
        socket: &Arc<socketioxide::socket::Socket<A>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let order = socket.extensions.get::<Arc<Client>>().map(|c| c.order.clone()).unwrap_or_default();
        let number = order.issued.fetch_add(1, Ordering::SeqCst);
        Ok(Turn { order, number })
    }
}
