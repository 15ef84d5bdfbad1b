//! The edge's half of the notification inbox (see `switchboard-notifier`): what makes a
//! notification delivered at the first connect after its creation, and counted as delivered
//! only once a socket got it.
//!
//! - [`flush_inbox`]: once the first of a user's sockets here is told it is connected, the
//!   edge asks the notifier for the user's undelivered notifications (`notification.flush`,
//!   confirmed, into a durable queue that waits for a notifier). Once per user here, not per
//!   socket: while the user has a socket here, what is created for them reaches it live.
//!   Asked after the connect, not when the binding is made: what the flush pushes then finds
//!   the socket connected. Asked again for every user when the edge's queue comes back after
//!   it was lost (see [`crate::inbound`]), since what was routed to it meanwhile is gone.
//! - [`emit`]: a delivery that carries a receipt (the notifier's `notification:new`, for the
//!   recipient's user room) is emitted socket by socket, and if one connected socket took it,
//!   the receipt (`notification.delivered`) is published, which alone marks the notification
//!   delivered. One that reached no socket (the socket closed meanwhile, or was still being
//!   admitted) stays for the next connect. Only the bus can ask for a receipt: what a backend
//!   emits through the ingress never carries one, whatever its event and payload.

use socketioxide::SocketIo;
use switchboard::{
    Bus,
    bus::Durability,
    contract::{
        Room, UserId,
        bus::{Deliver, FlushInbox},
    },
};

use crate::bindings::Bindings;

/// Asks for the user's undelivered notifications, until the broker took the request or the
/// user has no socket here any more (or the edge stops): the request must not be lost, or what
/// waits in the inbox would wait for another connect. Asked once per user here, by the first
/// of their sockets to connect ([`Bindings::take_unflushed`]).
pub async fn flush_inbox(bus: &Bus, bindings: &Bindings, user: &UserId) {
    let flush = FlushInbox { user_id: user.clone() };
    let mut delays = switchboard::bus::backoff();
    loop {
        if !bus.wait_ready().await {
            return;
        }
        let published = bus.publish(&flush, Durability::Confirmed).await;
        match published {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "could not ask for a user's waiting notifications; retrying")
            }
        }
        tokio::time::sleep(delays.next().unwrap_or(switchboard::bus::MAX_RECONNECT_DELAY)).await;
        if !bindings.has_user(user) {
            return;
        }
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
