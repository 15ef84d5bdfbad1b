//! `notification.flushes`: several users' first sockets connected on one edge while its last
//! flush request was on its way (an edge restarting sends thousands at once). Each user is
//! flushed as for a `notification.flush` of their own ([`flush_inbox`](super::flush_inbox)):
//! their inbox checks share the gathered queries of [`crate::waiting`], and only the users with
//! something waiting have their inbox read. A failure (the database away) requeues the whole
//! message; the users already flushed are flushed again, which the client tolerates (it drops
//! a repeated `id`), as it does for any flush redone.

use futures::future::join_all;
use switchboard::contract::bus::{FlushInbox, FlushInboxes};

use crate::{Failure, Notifier};

pub async fn handle(notifier: &Notifier, flushes: FlushInboxes) -> Result<(), Failure> {
    let flushed = join_all(
        flushes
            .user_ids
            .into_iter()
            .map(|user_id| super::flush_inbox::handle(notifier, FlushInbox { user_id })),
    )
    .await;
    flushed.into_iter().collect()
}
