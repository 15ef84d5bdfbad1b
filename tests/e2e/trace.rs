//! One trace per chat message across every process (issue 17; `switchboard::trace`): the real
//! binaries export their spans over OTLP/HTTP to a collector this test runs in process, and one
//! `message:send` from a socket on one edge to a socket on another must leave one trace holding
//! the sending edge's event, the messages worker's batch, commit and fan-out, and the emit at
//! the receiving edge, each the child of the span before it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::header, response::IntoResponse, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value::Value as Attribute},
};
use prost::Message;
use serde_json::json;
use switchboard_tests::{Bin, Driver, TestEnv, as_user, eventually};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    /// `service.instance.id`: tells two edges apart.
    instance: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<Span>>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Attribute::StringValue(s)) => s.clone(),
        Some(Attribute::IntValue(i)) => i.to_string(),
        Some(Attribute::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn find(attributes: &[KeyValue], key: &str) -> String {
    text(attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()))
}

/// `POST /v1/traces` of OTLP/HTTP with a protobuf body: keeps every span.
async fn collect(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export request");
    let mut kept = spans.lock().expect("not poisoned");
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let (service, instance) = (find(&resource, "service.name"), find(&resource, "service.instance.id"));
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Span {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name,
                    trace: span.trace_id,
                    id: span.span_id,
                    parent: span.parent_span_id,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn start_collector() -> (String, Spans) {
    let spans = Spans::default();
    let app = Router::new().route("/v1/traces", post(collect)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
    let addr: SocketAddr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

#[tokio::test]
async fn one_message_leaves_one_trace_across_the_edge_the_worker_and_the_receiving_edge() {
    let (collector, spans) = start_collector().await;
    let env = TestEnv::new().await;
    // Exported within 100 ms of ending rather than the SDK's 5 s.
    let traced = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let worker = env.spawn_ready(Bin::Messages, &traced).await;
    let (sending, receiving) =
        tokio::join!(env.spawn_ready(Bin::Edge, &traced), env.spawn_ready(Bin::Edge, &traced));
    env.add_session("alice-token", "alice", HOUR).await;
    env.add_session("bob-token", "bob", HOUR).await;
    let conversation = env.create_conversation(&sending, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    driver.connect("alice", &sending.url(), as_user("alice")).await.expect("alice connects");
    driver.connect("bob", &receiving.url(), as_user("bob")).await.expect("bob connects");

    let send = json!({ "conversationId": conversation, "content": "traced", "clientMessageId": "t-1" });
    let ack = driver.emit_ack("alice", "message:send", send).await;
    assert_eq!(ack["success"], true, "{ack}");
    let message = driver.event("bob", "message:new").await;
    assert_eq!(message["content"], "traced");

    // The sending edge's span for this event, then everything of its trace.
    let sent = eventually("the sending edge's message:send span", Duration::from_secs(10), || {
        let spans = spans.lock().expect("not poisoned").clone();
        async move { spans.into_iter().find(|s| s.name == "message:send" && s.service == "switchboard-edge") }
    })
    .await;
    assert!(sent.parent.is_empty(), "a client event starts its trace: {sent:?}");
    // Each process exports its spans in batches of its own, so the worker's may arrive after the
    // receiving edge's: wait for both.
    let wanted = "the receiving edge's emit and the worker's spans in the same trace";
    let trace = eventually(wanted, Duration::from_secs(10), || {
        let spans = spans.lock().expect("not poisoned").clone();
        let (trace, sender) = (sent.trace.clone(), sent.instance.clone());
        async move {
            let trace: Vec<Span> = spans.into_iter().filter(|s| s.trace == trace).collect();
            let emitted = trace.iter().any(|s| s.name == "emit" && s.instance != sender);
            let worked = ["shard batch", "commit", "fan-out"]
                .iter()
                .all(|name| trace.iter().any(|s| s.service == "switchboard-messages" && s.name == *name));
            (emitted && worked).then_some(trace)
        }
    })
    .await;
    let one = |service: &str, name: &str| -> Span {
        let found: Vec<&Span> = trace.iter().filter(|s| s.service == service && s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span of {service} in the trace: {trace:#?}");
        found[0].clone()
    };
    let worker_spans = ["shard batch", "commit", "fan-out"].map(|name| one("switchboard-messages", name));
    for span in &worker_spans {
        assert_eq!(span.parent, sent.id, "{} continues the client event: {trace:#?}", span.name);
    }
    let fan_out = &worker_spans[2];
    let emits: Vec<&Span> =
        trace.iter().filter(|s| s.name == "emit" && s.instance != sent.instance).collect();
    assert_eq!(emits.len(), 1, "one emit at the receiving edge: {trace:#?}");
    assert_eq!(emits[0].service, "switchboard-edge");
    assert_eq!(emits[0].parent, fan_out.id, "the emit continues the fan-out");
    assert_eq!(emits[0].attribute("event"), Some("message:new"));
    drop((worker, sending, receiving));
}
