//! The edge queue's consumer (docs/reference.md, Connecting and Server events): what arrives
//! for this edge's sockets, read in queue order and handed to the module named after its kind.
//!
//! | kind | module | what it does |
//! | --- | --- | --- |
//! | `edge.deliver` | [`deliver`] | emits to the local sockets of its rooms |
//! | `edge.deliver.batch` | [`deliver_batch`] | a worker's fan-out: each item as a delivery |
//! | `conversation.closed` | [`conversation_closed`] | every local socket leaves the room |
//! | `user.disconnect` | [`disconnect_user`] | ends the user's local sockets |
//!
//! Deliveries are handled one at a time, in queue order, so a conversation's `message:new`
//! reach each socket in `seq` order. A message that can never be read is parked in the
//! dead-letter queue and acknowledged, so the queue goes on.
//!
//! **Reconnection.** When the channel dies (broker restart, connection closed by an operator),
//! the loop backs off, then opens the queue again ([`Bindings::open`]: declared, every room
//! with local sockets re-bound) and only then consumes: nothing published after the re-bind is
//! missed. What was routed to the old queue meanwhile is gone with it, so every socket is told
//! `sync:required` and every user's waiting notifications are asked for again.

pub mod conversation_closed;
pub mod deliver;
pub mod deliver_batch;
pub mod disconnect_user;

use std::sync::Arc;

use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use socketioxide::SocketIo;
use switchboard::{
    Bus, Shutdown,
    bus::{BusError, Envelope, in_time, queues::EdgeInbound},
    contract::server,
};

use crate::{auth::Authenticator, bindings::Bindings, inbox::Flusher};

/// What the consumer and its handlers share.
pub struct Inbound {
    pub io: SocketIo,
    pub bus: Bus,
    pub bindings: Arc<Bindings>,
    /// Whose cached sessions `user.disconnect` may revoke.
    pub auth: Arc<Authenticator>,
    /// Asks for every user's waiting notifications again when the queue comes back.
    pub inbox: Flusher,
}

impl Inbound {
    /// Runs the consumer until shutdown, then deletes the queue.
    pub fn start(self, shutdown: &Shutdown) {
        let this = Arc::new(self);
        let shutdown = shutdown.clone();
        let tracker = shutdown.clone();
        tracker.spawn(async move {
            let mut delays = switchboard::bus::backoff();
            // Since when deliveries may have been lost: set when the queue goes, cleared once
            // the sockets were told.
            let mut lost_since = None;
            loop {
                if !this.bus.wait_ready().await {
                    break;
                }
                match this.consume(&shutdown, &mut lost_since).await {
                    Ok(()) => break,
                    Err(error) => {
                        lost_since.get_or_insert_with(chrono::Utc::now);
                        tracing::warn!(queue = %this.bindings.queue, %error, "delivery queue lost; re-creating it")
                    }
                }
                this.bindings.lost();
                tokio::select! {
                    _ = tokio::time::sleep(delays.next().unwrap_or(switchboard::bus::MAX_RECONNECT_DELAY)) => {}
                    _ = shutdown.triggered() => break,
                }
            }
            this.bindings.set_ready(false);
        });
    }

    /// One life of the queue: open, consume until the channel dies or shutdown. After a life
    /// that ended (`lost_since`), every socket is told to catch up once the queue is back.
    async fn consume(
        self: &Arc<Self>,
        shutdown: &Shutdown,
        lost_since: &mut Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), BusError> {
        let queue = self.bindings.queue.as_str();
        let channel = self.bus.channel().await?;
        in_time("setting the prefetch", channel.basic_qos(256, BasicQosOptions::default())).await?;
        self.bindings.open(&self.bus, &channel).await?;
        let consume = channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let mut consumer = in_time("consuming", consume).await?;
        self.bindings.set_ready(true);
        tracing::info!(queue, "delivering");
        if let Some(since) = lost_since.take() {
            self.resumed(since).await;
        }
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.triggered() => break,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(error.into()),
                None => return Err(BusError::Unavailable("the broker cancelled the consumer".into())),
            };
            metrics::counter!("bus_consumed_total", "queue" => "edge").increment(1);
            match Envelope::<EdgeInbound>::decode_inbound(&delivery.data) {
                Ok(envelope) => self.dispatch(envelope).await,
                // Never deliverable: parked, then acknowledged, so the queue goes on. If the
                // broker cannot take it now, the channel is gone and the delivery with it.
                Err(error) => self.bus.dead_letter(queue, &delivery, &error.into()).await?,
            }
            in_time("acknowledging", delivery.acker.ack(BasicAckOptions::default())).await?;
        }
        self.bindings.delete(&channel).await;
        Ok(())
    }

    /// The one place an inbound kind meets its handler.
    async fn dispatch(self: &Arc<Self>, envelope: Envelope<EdgeInbound>) {
        let Self { io, bus, bindings, auth, .. } = &**self;
        let sent_at = envelope.sent_at;
        match envelope.data {
            EdgeInbound::Deliver(deliver) => deliver::handle(io, bus, deliver, sent_at).await,
            EdgeInbound::DeliverBatch(batch) => deliver_batch::handle(io, bus, batch, sent_at).await,
            EdgeInbound::ConversationClosed(closed) => {
                conversation_closed::handle(io, bus, bindings, closed).await
            }
            EdgeInbound::DisconnectUser(disconnect) => disconnect_user::handle(io, auth, disconnect),
        }
    }

    /// The queue is back after it was lost: what was routed to it meanwhile is gone (an
    /// exclusive queue goes with the broker connection). Every socket is told `sync:required`
    /// and catches up from its last `seq`, and every user's waiting notifications are asked for
    /// again (one that reached no socket was never marked delivered).
    async fn resumed(&self, since: chrono::DateTime<chrono::Utc>) {
        metrics::counter!("edge_deliveries_resumed_total").increment(1);
        let users = self.bindings.users();
        tracing::warn!(queue = %self.bindings.queue, %since, sockets = self.io.sockets().len(), "deliveries resumed; telling every socket to catch up");
        let event = <server::SyncRequired as server::ServerEvent>::NAME;
        if let Err(error) = self.io.emit(event, &server::SyncRequired { since }).await {
            tracing::warn!(%error, "could not tell every socket to catch up");
        }
        for user in users {
            self.inbox.flush(user);
        }
    }
}
