//! `notification.create`: a backend's notification for a user's inbox (through the ingress or
//! the bus). It is stored first, once per id (a replay stores nothing new), then pushed to the
//! user's sockets; it counts as delivered only when an edge says a socket got it, and waits for
//! the user's next connect otherwise (see the crate docs).

use switchboard::{
    bus::{Incoming, Outcome},
    contract::bus::CreateNotification,
};

use crate::{Failure, Notifier, inbox};

/// `notification.create`: store, then deliver. A notification whose data the database refuses
/// is parked in the dead-letter queue and the next one goes on.
pub async fn handle(notifier: &Notifier, incoming: Incoming) -> Outcome {
    let create = match incoming.decode::<CreateNotification>() {
        Ok(envelope) => envelope.data,
        Err(error) => return Outcome::DeadLetter(error.into()),
    };
    let stored = async {
        let notification = inbox::store(notifier, &create, None).await?;
        inbox::push(notifier, &notification).await
    };
    Failure::settle(stored.await, "a notification")
}
