//! `edge.deliver`: a server event for rooms (a backend's emit, a typing indicator, a presence
//! change, a notification), emitted to the local sockets of its rooms.
//!
//! A delivery may also carry the answer to a request of this edge (a chat command's reply,
//! which rides with the fan-out): it is handed to the request that waits for it before the
//! event is emitted. One that asks for a receipt (a notification) is emitted by
//! [`crate::inbox`]. A delivery may leave out the socket that caused it (`except_socket`).

use std::str::FromStr;

use socketioxide::{SocketIo, socket::Sid};
use switchboard::{
    Bus,
    contract::{Room, bus::Deliver, server},
    trace,
};
use tracing::Instrument;

/// Emits one delivery, published at `sent_at`, to the local sockets of its rooms, and hands the
/// answer it carries (if any) to the request of this edge that waits for it.
pub async fn handle(io: &SocketIo, bus: &Bus, deliver: Deliver, sent_at: chrono::DateTime<chrono::Utc>) {
    // The last span of a message's trace, when it has one (see `switchboard::trace`).
    let span = match &deliver.traceparent {
        Some(parent) if trace::enabled() => {
            let span = tracing::debug_span!(target: trace::TARGET, "emit", event = %deliver.event, otel.kind = "consumer");
            trace::continue_from(&span, [Some(parent)]);
            span
        }
        _ => tracing::Span::none(),
    };
    emit(io, bus, deliver, sent_at).instrument(span).await
}

async fn emit(io: &SocketIo, bus: &Bus, mut deliver: Deliver, sent_at: chrono::DateTime<chrono::Utc>) {
    if let Some(reply) = deliver.reply.take() {
        bus.answer_waiting(reply).await;
    }
    // A notification is emitted socket by socket, and its receipt sent, by the inbox.
    if !crate::inbox::emit(io, bus, &deliver) {
        let rooms: Vec<String> = deliver.rooms.iter().map(Room::to_string).collect();
        // The socket to leave out, when it is here, broadcasts to the rooms itself: Socket.IO
        // then skips it. (Excluding it by name would need a room per socket.)
        let sender = deliver.except_socket.as_deref().and_then(|sid| Sid::from_str(sid).ok());
        let operator = match sender.and_then(|sid| io.get_socket(sid)) {
            Some(sender) => sender.to(rooms),
            None => io.to(rooms),
        };
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
