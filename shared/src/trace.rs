//! One trace per chat message across every process (docs/reference.md, Traces).
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector; then [`Exporter::start`] sends
//! spans there over OTLP/HTTP from the SDK's own thread, and a `message:send` leaves one trace:
//!
//! - `message:send` at the sending edge (every client event has its span, named after it);
//! - `shard batch`, `commit` and `fan-out` at the messages worker;
//! - `emit` at every edge that hands the message to a socket.
//!
//! **Across the broker** the context travels as a W3C `traceparent`: in the AMQP header of that
//! name for a message of its own, and in the item itself ([`TraceParent`] fields of
//! `BatchedRequest` and `Deliver`) for an item of a batch, since one batch carries many
//! messages' traces. A batch's spans continue the trace of its first item that has one and are
//! linked to every other item's ([`continue_from`]), so a message alone in its batch (every
//! message at ordinary load) has one whole trace, and one that shared a batch leads to the
//! batch by a link. Each fanned-out item carries its own message's trace on, so the `emit` at a
//! receiving edge is always in the message's trace.
//!
//! **Costs nothing when off.** The spans are at DEBUG level under the target [`TARGET`], which
//! only the exporting layer asks for (and `RUST_LOG`, if someone turns it on for logs); off,
//! creating one is a disabled callsite, and every helper here returns at once.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use lapin::{BasicProperties, types::AMQPValue};
use opentelemetry::{
    KeyValue,
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    Layer, Registry,
    filter::{LevelFilter, Targets},
};

pub use crate::contract::bus::TraceParent;

/// The `tracing` target of the spans that make up a message's trace.
pub const TARGET: &str = "switchboard::trace";

/// The AMQP header that carries a message's [`TraceParent`] (the W3C name).
pub const HEADER: &str = "traceparent";

/// How long the exporter may take to send what it holds when the process stops.
const FLUSH: Duration = Duration::from_secs(2);

/// The most batch items a batch's span links to (the SDK's own default limit).
const MAX_LINKS: usize = 128;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: when not, nothing here does anything.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter, flushed by [`Exporter::stop`] when the process ends.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// The exporter to `endpoint` (an OTLP/HTTP base URL) for `binary`, and the layer that
    /// feeds it the spans of [`TARGET`] (and WARN and ERROR events inside them).
    pub fn start(
        endpoint: &str,
        binary: &str,
    ) -> Result<(Self, Box<dyn Layer<Registry> + Send + Sync>), String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|error| format!("cannot export traces to {endpoint}: {error}"))?;
        // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` win when set (the SDK reads them).
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(binary.to_owned());
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.instance.id", uuid::Uuid::now_v7().to_string()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let layer =
            tracing_opentelemetry::layer().with_tracer(provider.tracer(binary.to_owned())).with_filter(
                Targets::new().with_target(TARGET, LevelFilter::DEBUG).with_default(LevelFilter::WARN),
            );
        ENABLED.store(true, Ordering::Relaxed);
        Ok((Self { provider }, Box::new(layer)))
    }

    /// Sends the spans still held, within a short bound; called once the process's work is done.
    pub fn stop(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH) {
            tracing::debug!(%error, "the last spans could not be exported");
        }
    }
}

/// The context to carry across the broker for `span`; `None` when traces are off or the span
/// is not recorded.
pub fn parent_of(span: &Span) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    fields.remove(HEADER).map(TraceParent)
}

/// [`parent_of`] the current span.
pub fn current() -> Option<TraceParent> {
    if !enabled() { None } else { parent_of(&Span::current()) }
}

/// Makes `span` continue the first trace of `parents` (a child of that remote span) and link
/// to the others: a batch's span, for the items it carries.
pub fn continue_from<'a>(span: &Span, parents: impl IntoIterator<Item = Option<&'a TraceParent>>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let mut parents = parents.into_iter().flatten();
    let Some(first) = parents.next() else { return };
    let propagator = TraceContextPropagator::new();
    let context_of = |parent: &TraceParent| {
        let fields = HashMap::from([(HEADER.to_owned(), parent.0.clone())]);
        propagator.extract(&fields)
    };
    let first = context_of(first);
    if first.span().span_context().is_valid() {
        // Only fails once the span has started, which a span fresh from its macro has not.
        let _ = span.set_parent(first);
    }
    for parent in parents.take(MAX_LINKS) {
        let context = context_of(parent);
        let linked = context.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
}

/// The [`TraceParent`] an AMQP message carries in its [`HEADER`].
pub fn from_header(properties: &BasicProperties) -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    match properties.headers().as_ref()?.inner().get(HEADER)? {
        AMQPValue::LongString(value) => Some(TraceParent(value.to_string())),
        AMQPValue::ShortString(value) => Some(TraceParent(value.as_str().to_owned())),
        _ => None,
    }
}

/// Adds `parent` (when there is one) to the headers of `properties`.
pub fn with_header(properties: BasicProperties, parent: Option<TraceParent>) -> BasicProperties {
    let Some(TraceParent(parent)) = parent else { return properties };
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(HEADER.into(), AMQPValue::LongString(parent.into()));
    properties.with_headers(headers)
}
