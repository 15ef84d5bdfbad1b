//! HELP text of the edge's own metrics, in one place (the shared ones are described by
//! `switchboard::telemetry`). `docs/metrics.md` lists them with their labels.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Describes every metric the edge records. Called once at the start of [`crate::run`].
pub fn describe() {
    describe_gauge!("edge_sockets_connected", "Sockets connected to this edge now.");
    describe_counter!("edge_connects_total", "Sockets admitted (Socket.IO CONNECT accepted).");
    describe_counter!(
        "edge_connect_refused_total",
        "Connections refused, by reason: unauthorized, unavailable, origin, rate_limited, too_many_connections."
    );
    describe_counter!(
        "edge_handshakes_refused_total",
        "Engine.IO handshakes answered 429 by the per-address budget, by reason."
    );
    describe_counter!(
        "edge_events_in_total",
        "Client events received, by event name (unknown names count as event=\"unknown\")."
    );
    describe_counter!(
        "edge_acks_total",
        "Acknowledgements sent to clients, by event and result (ok or the error code)."
    );
    describe_histogram!(
        "edge_event_duration_seconds",
        "Time from receiving a client event to acknowledging it, in seconds, by event."
    );
    describe_counter!(
        "edge_events_out_total",
        "Events emitted to sockets, by event name (names a backend chose count as event=\"other\")."
    );
    describe_histogram!(
        "edge_delivery_latency_seconds",
        "Time from a worker or backend publishing a delivery to this edge emitting it, in seconds."
    );
    describe_counter!(
        "edge_deliveries_resumed_total",
        "Times this edge's delivery queue was set up again after the broker was lost (sockets are told sync:required)."
    );
    describe_counter!(
        "edge_chat_refused_total",
        "Chat commands answered unavailable at once because their shard had too many waiting, by reason."
    );
    describe_counter!("edge_ingress_total", "Ingress requests accepted, by route.");
    describe_counter!(
        "edge_session_lookups_total",
        "Session queries run against the database (one may look up many tokens)."
    );
    describe_counter!("edge_session_lookup_tokens_total", "Tokens looked up by session queries.");
    describe_gauge!("edge_session_lookups_waiting", "Handshakes waiting for a session query now.");
    describe_counter!(
        "edge_session_refusals_remembered_total",
        "Handshakes refused without a query because their token was refused moments ago."
    );
}
