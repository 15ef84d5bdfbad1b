//! The edge's half of the notification inbox (see `switchboard-notifier`): what makes a
//! notification delivered at the first connect after its creation, and counted as delivered
//! only once a socket got it.
//!
//! - [`Flusher`]: once the first of a user's sockets here is told it is connected, the edge
//!   asks the notifier for the user's undelivered notifications (`notification.flush`,
//!   confirmed, into a durable queue that waits for a notifier). Once per user here, not per
//!   socket: while the user has a socket here, what is created for them reaches it live.
//!   Asked after the connect, not when the binding is made: what the flush pushes then finds
//!   the socket connected. Asked again for every user when the edge's queue comes back after
//!   it was lost (see [`crate::inbound`]), since what was routed to it meanwhile is gone. The
//!   users asked for while the last request was on its way go together, as one
//!   `notification.flushes`: an edge that restarts under thousands of users sends a few
//!   persistent messages, not one per user.
//! - [`emit`]: a delivery that carries a receipt (the notifier's `notification:new`, for the
//!   recipient's user room) is emitted socket by socket, and if one connected socket took it,
//!   the receipt (`notification.delivered`) is published, which alone marks the notification
//!   delivered. One that reached no socket (the socket closed meanwhile, or was still being
//!   admitted) stays for the next connect. Only the bus can ask for a receipt: what a backend
//!   emits through the ingress never carries one, whatever its event and payload.

use std::sync::Arc;

use socketioxide::SocketIo;
use switchboard::{
    Bus,
    bus::Durability,
    contract::{
        Room, UserId,
        bus::{Deliver, FlushInbox, FlushInboxes},
    },
};
use tokio::sync::mpsc;

use crate::bindings::Bindings;

/// Asks the notifier for users' undelivered notifications, in rounds: one task publishes, and
/// the users asked for while it waits for the broker's confirm go in its next request. Cheap to
/// clone; the task ends with the last clone.
#[derive(Clone)]
pub struct Flusher {
    users: mpsc::UnboundedSender<UserId>,
}

impl Flusher {
    pub fn start(bus: Bus, bindings: Arc<Bindings>) -> Self {
        let (users, asked) = mpsc::unbounded_channel();
        tokio::spawn(flush_rounds(bus, bindings, asked));
        Self { users }
    }

    /// Asks for `user`'s waiting notifications (once per user here: see
    /// [`Bindings::take_unflushed`]).
    pub fn flush(&self, user: UserId) {
        let _ = self.users.send(user);
    }
}

/// Publishes each round until the broker took it or none of its users has a socket here any
/// more (or the edge stops): a request must not be lost, or what waits in the inbox would wait
/// for another connect.
async fn flush_rounds(bus: Bus, bindings: Arc<Bindings>, mut asked: mpsc::UnboundedReceiver<UserId>) {
    let mut round = Vec::with_capacity(FlushInboxes::MAX);
    while asked.recv_many(&mut round, FlushInboxes::MAX).await > 0 {
        let mut delays = switchboard::bus::backoff();
        loop {
            if !bus.wait_ready().await {
                return;
            }
            let published = match round.as_slice() {
                [user] => bus.publish(&FlushInbox { user_id: user.clone() }, Durability::Confirmed).await,
                users => bus.publish(&FlushInboxes { user_ids: users.to_vec() }, Durability::Confirmed).await,
            };
            match published {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, users = round.len(), "could not ask for users' waiting notifications; retrying")
                }
            }
            tokio::time::sleep(delays.next().unwrap_or(switchboard::bus::MAX_RECONNECT_DELAY)).await;
            // A user gone meanwhile is asked for again at their next connect.
            round.retain(|user| bindings.has_user(user));
            if round.is_empty() {
                break;
            }
        }
        round.clear();
    }
}

/// Emits a delivery that asks for a receipt (one user room, the receipt's user's) socket by
/// socket, and sends the receipt if a connected socket took it. Returns false for any other
/// delivery, which the caller emits as usual.
pub fn emit(io: &SocketIo, bus: &Bus, deliver: &Deliver) -> bool {
    let Some(receipt) = &deliver.receipt else { return false };
    if !matches!(deliver.rooms.as_slice(), [Room::User(user)] if *user == receipt.user_id) {
        // Malformed (no publisher of ours sends it): emitted as usual, no receipt.
        return false;
    }
    let room = Room::User(receipt.user_id.clone()).to_string();
    let got = io
        .to(room)
        .sockets()
        .into_iter()
        .filter(|socket| socket.emit(deliver.event.as_str(), &deliver.data).is_ok())
        .count();
    if got > 0 {
        let bus = bus.clone();
        let receipt = receipt.clone();
        // Off the delivery loop, which must not wait for a confirm per notification. A receipt
        // lost here means one more delivery at the next connect.
        tokio::spawn(async move {
            let sent = bus.publish(&receipt, Durability::Confirmed).await;
            if let Err(error) = sent {
                tracing::warn!(%error, "could not report a delivered notification");
            }
        });
    }
    true
}
