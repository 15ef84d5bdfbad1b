//! Delivery to this edge's sockets (docs/reference.md, Connecting and Server events).
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
//! **Reconnection.** When the channel dies (broker restart, connection closed by an operator),
//! the consumer loop backs off, then declares the queue again, re-binds every room that still
//! has local sockets, and only then consumes: nothing published after the re-bind is missed.
//! While the queue is down, new sockets are refused (`unavailable`) rather than admitted
//! without a binding, since their `connect` would promise a delivery we could not make.
//!
//! Deliveries are handled one at a time, in queue order, so a conversation's `message:new`
//! reach each socket in `seq` order. A worker's fan-out may come as one `edge.deliver.batch`
//! addressed to every user it concerns: its items are emitted in order, each to the local
//! sockets of its own rooms, so items for users this edge has no socket of cost nothing.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    sync::Arc,
};

use futures::StreamExt;
use lapin::{
    Channel,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeleteOptions},
    types::FieldTable,
};
use socketioxide::{SocketIo, socket::Sid};
use switchboard::{
    Bus, Shutdown,
    bus::{
        BusError, Envelope, Route, in_time,
        queues::{self, EdgeInbound},
    },
    contract::{Room, UserId, bus::Deliver, server},
    trace,
};
use tokio::sync::{Mutex, mpsc, watch};
use tracing::Instrument;
use uuid::Uuid;

/// The edge's queue and its bindings.
pub struct Deliveries {
    pub edge_id: Uuid,
    queue: String,
    pub bus: Bus,
    state: Mutex<Bindings>,
    /// True while the queue is declared, bound and consumed.
    ready: watch::Sender<bool>,
    /// Told when a user's first socket here opens or the last one closes (presence).
    transitions: mpsc::UnboundedSender<crate::presence::Transition>,
    /// Whose cached sessions `user.disconnect` may revoke.
    auth: Arc<crate::auth::Authenticator>,
}

#[derive(Default)]
struct Bindings {
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

impl Deliveries {
    pub fn new(
        bus: Bus,
        transitions: mpsc::UnboundedSender<crate::presence::Transition>,
        auth: Arc<crate::auth::Authenticator>,
    ) -> Arc<Self> {
        let edge_id = Uuid::now_v7();
        let (ready, _) = watch::channel(false);
        Arc::new(Self {
            edge_id,
            queue: format!("edge.{edge_id}"),
            bus,
            state: Mutex::default(),
            ready,
            transitions,
            auth,
        })
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Adds one local socket to `room`, binding the queue if it is the first. Returns once the
    /// broker confirmed the binding.
    pub async fn add(&self, room: &Room) -> Result<(), BusError> {
        self.add_within(room, usize::MAX).await.map(drop)
    }

    /// [`Deliveries::add`], unless `room` already has `limit` local sockets: then nothing
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
    pub async fn users(&self) -> Vec<switchboard::contract::UserId> {
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

    /// The queue is back after it was lost: what was routed to it meanwhile is gone (an
    /// exclusive queue goes with the broker connection). Every socket is told `sync:required`
    /// and catches up from its last `seq`, and every user's waiting notifications are asked for
    /// again (one that reached no socket was never marked delivered).
    async fn resumed(self: &Arc<Self>, io: &SocketIo, since: chrono::DateTime<chrono::Utc>) {
        metrics::counter!("edge_deliveries_resumed_total").increment(1);
        let users = self.users().await;
        tracing::warn!(queue = %self.queue, %since, sockets = io.sockets().len(), "deliveries resumed; telling every socket to catch up");
        if let Err(error) = io
            .emit(<server::SyncRequired as server::ServerEvent>::NAME, &server::SyncRequired { since })
            .await
        {
            tracing::warn!(%error, "could not tell every socket to catch up");
        }
        let this = self.clone();
        tokio::spawn(async move {
            for user in users {
                crate::inbox::flush_inbox(&this, &user).await;
            }
        });
    }

    /// Runs the consumer until shutdown, then deletes the queue.
    pub fn start(self: &Arc<Self>, io: SocketIo, shutdown: &Shutdown) {
        let this = self.clone();
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
                match this.consume(&io, &shutdown, &mut lost_since).await {
                    Ok(()) => break,
                    Err(error) => {
                        lost_since.get_or_insert_with(chrono::Utc::now);
                        tracing::warn!(queue = %this.queue, %error, "delivery queue lost; re-creating it")
                    }
                }
                this.ready.send_replace(false);
                this.state.lock().await.channel = None;
                tokio::select! {
                    _ = tokio::time::sleep(delays.next().unwrap_or(switchboard::bus::MAX_RECONNECT_DELAY)) => {}
                    _ = shutdown.triggered() => break,
                }
            }
            this.ready.send_replace(false);
        });
    }

    /// One life of the queue: declare, re-bind, consume until the channel dies or shutdown.
    /// After a life that ended (`lost_since`), every socket is told to catch up once the queue
    /// is back.
    async fn consume(
        self: &Arc<Self>,
        io: &SocketIo,
        shutdown: &Shutdown,
        lost_since: &mut Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), BusError> {
        let channel = self.bus.channel().await?;
        in_time("setting the prefetch", channel.basic_qos(256, BasicQosOptions::default())).await?;
        let mut consumer = {
            let mut state = self.state.lock().await;
            self.bus.declare(&channel, &queues::edge(&self.queue)).await?;
            for room in state.counts.keys() {
                bind(&channel, &self.queue, room).await?;
            }
            let consumer = in_time(
                "consuming",
                channel.basic_consume(
                    self.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            state.channel = Some(channel.clone());
            consumer
        };
        self.ready.send_replace(true);
        tracing::info!(queue = %self.queue, "delivering");
        if let Some(since) = lost_since.take() {
            self.resumed(io, since).await;
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
            let settled = match Envelope::<EdgeInbound>::decode_inbound(&delivery.data) {
                Ok(envelope) => {
                    let sent_at = envelope.sent_at;
                    match envelope.data {
                        EdgeInbound::Deliver(deliver) => emit(io, &self.bus, deliver, sent_at).await,
                        EdgeInbound::DeliverBatch(batch) => {
                            for item in batch.items {
                                emit(io, &self.bus, item, sent_at).await;
                            }
                        }
                        EdgeInbound::ConversationClosed(closed) => {
                            crate::events::conversations::closed(io, self, closed.conversation_id).await
                        }
                        // Off the delivery loop: forgetting cached sessions walks the whole
                        // session cache, which must not hold up everyone's deliveries.
                        EdgeInbound::DisconnectUser(disconnect) => {
                            let (io, auth) = (io.clone(), self.auth.clone());
                            tokio::spawn(
                                async move { crate::logout::disconnect(&io, &auth, &disconnect).await },
                            );
                        }
                    }
                    in_time("acknowledging", delivery.acker.ack(BasicAckOptions::default())).await
                }
                // Never deliverable: parked, then acknowledged, so the queue goes on. If the
                // broker cannot take it now, the channel is gone and the delivery with it.
                Err(error) => {
                    self.bus.dead_letter(&self.queue, &delivery, &error.into()).await?;
                    in_time("acknowledging", delivery.acker.ack(BasicAckOptions::default())).await
                }
            };
            settled?;
        }
        self.stop(&channel).await;
        Ok(())
    }

    /// At shutdown: no more unbinding one by one, the queue goes as a whole.
    async fn stop(&self, channel: &Channel) {
        let mut state = self.state.lock().await;
        state.closing = true;
        state.channel = None;
        self.ready.send_replace(false);
        let deleted = in_time(
            "deleting the queue",
            channel.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()),
        );
        if let Err(error) = deleted.await {
            tracing::warn!(queue = %self.queue, %error, "could not delete the delivery queue");
        }
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

/// Emits one delivery, published at `sent_at`, to the local sockets of its rooms, and hands the
/// answer it carries (if any) to the request of this edge that waits for it.
async fn emit(io: &SocketIo, bus: &Bus, deliver: Deliver, sent_at: chrono::DateTime<chrono::Utc>) {
    // The last span of a message's trace, when it has one (see `switchboard::trace`).
    let span = match &deliver.traceparent {
        Some(parent) if trace::enabled() => {
            let span = tracing::debug_span!(target: trace::TARGET, "emit", event = %deliver.event, otel.kind = "consumer");
            trace::continue_from(&span, [Some(parent)]);
            span
        }
        _ => tracing::Span::none(),
    };
    emit_here(io, bus, deliver, sent_at).instrument(span).await
}

async fn emit_here(io: &SocketIo, bus: &Bus, mut deliver: Deliver, sent_at: chrono::DateTime<chrono::Utc>) {
    if let Some(reply) = deliver.reply.take() {
        bus.answer_waiting(reply).await;
    }
    // A notification is emitted socket by socket, and its receipt sent, by the inbox.
    if !crate::inbox::emit(io, bus, &deliver) {
        let rooms: Vec<String> = deliver.rooms.iter().map(Room::to_string).collect();
        let mut operator = io.to(rooms);
        if let Some(except) = deliver.except_socket.as_deref().and_then(|sid| Sid::from_str(sid).ok()) {
            operator = operator.except(except);
        }
        if let Err(error) = operator.emit(deliver.event.as_str(), &deliver.data).await {
            tracing::debug!(%error, event = %deliver.event, "a socket could not take a delivery");
        }
    }
    // Backends may emit any name (docs/reference.md, Ingress): one series per name would grow the
    // metrics without bound, so names that are not the server's own share one series.
    let label = server::known(deliver.event.as_str()).unwrap_or("other");
    metrics::counter!("edge_events_out_total", "event" => label).increment(1);
    let latency = (chrono::Utc::now() - sent_at).to_std().unwrap_or_default();
    metrics::histogram!("edge_delivery_latency_seconds").record(latency.as_secs_f64());
}
