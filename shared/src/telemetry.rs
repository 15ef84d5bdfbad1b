//! Logging and metrics set-up shared by every binary.
//!
//! Logs go to stderr through `tracing`: human-readable on a terminal, one JSON object per line
//! otherwise (what log collectors want), unless `LOG_FORMAT` says which. `RUST_LOG` sets the
//! level (default `info`). Metrics use the `metrics` facade with a Prometheus recorder that the
//! health server renders at `/metrics`.
//!
//! Every metric has HELP text, given in one place per crate: [`describe`] here for the metrics
//! every binary has (the bus, the build, the process), a `telemetry` module in each binary for
//! its own. `docs/metrics.md` lists them all; a test checks that every metric a binary exports
//! is in it and has HELP text.

use std::{io::IsTerminal, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, prelude::*};

use crate::{
    config::{Config, LogFormat},
    trace,
};

/// Silences lapin's log line for returned messages (see [`init_tracing`]).
const QUIET_RETURNS: &str = "lapin::returned_messages=error";

/// Installs the global tracing subscriber: logs, and spans for the collector at
/// `OTEL_EXPORTER_OTLP_ENDPOINT` when one is set (see [`crate::trace`]). Call once, first thing
/// in `main`; the exporter it returns is stopped (flushed) when the process ends.
pub fn init_tracing(config: &Config, binary: &str) -> Option<trace::Exporter> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,socketioxide=warn,engineioxide=warn"))
        // lapin warns about every message the broker returns, with its whole body (user content)
        // as bytes; a return is normal here (a notification for a user with no socket), and the
        // bus handles and counts it (`bus_returned_total`), so that warning is never shown.
        .add_directive(QUIET_RETURNS.parse().expect("a valid directive"));
    let format = config.log_format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).compact().with_filter(filter).boxed(),
        LogFormat::Json => fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    // Each layer filters for itself: the logs by `RUST_LOG`, the exporter by its own target,
    // so the message spans cost nothing while no collector is set.
    let mut layers = vec![logs];
    let exporter = match config.otlp_endpoint().map(|endpoint| trace::Exporter::start(endpoint, binary)) {
        Some(Ok((exporter, spans))) => {
            layers.push(spans);
            Some(exporter)
        }
        Some(Err(error)) => {
            eprintln!("{binary}: {error}; no traces are exported");
            None
        }
        None => None,
    };
    // A second call (tests that run several services in one process) keeps the first subscriber.
    drop(tracing_subscriber::registry().with(layers).try_init());
    exporter
}

/// Latency buckets in seconds, from 0.1 ms to 10 s: wide enough for an in-memory hop and for a
/// database commit under load.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets for counts of things in one batch (histograms named `*_size` and
/// `messages_batch_shards`): powers of two up to the largest batch.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Installs the global Prometheus recorder and returns the handle that renders it. Safe to call
/// more than once: later calls return the first handle.
pub fn init_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full("messages_batch_shards".into()), SIZE_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed, and then ours simply stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_start_time_seconds`, ...), in the names Prometheus's own
/// clients use. Read from the operating system at each scrape: [`collect_process_metrics`].
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Records the process metrics now; the `/metrics` handler calls it before rendering.
pub fn collect_process_metrics() {
    process_collector().collect();
}

/// HELP text of the metrics every binary can export. Each binary's own are described by its
/// `telemetry::describe`, called at the start of its `run`.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    process_collector().describe();
    describe_gauge!(
        "switchboard_build_info",
        "Always 1; the labels say which binary (binary) and which version (version) runs."
    );
    describe_counter!("bus_published_total", "Messages published to the broker, by exchange.");
    describe_counter!(
        "bus_publish_errors_total",
        "Publishes that failed (broker away, channel closed, refused), by exchange."
    );
    describe_counter!(
        "bus_returned_total",
        "Mandatory messages the broker returned because no queue took them (a user with no \
         socket, a request nothing serves), by exchange."
    );
    describe_counter!("bus_consumed_total", "Deliveries taken from a queue, by queue.");
    describe_counter!(
        "bus_dead_lettered_total",
        "Messages that could never be handled, parked in the dead.letters queue, by queue and reason."
    );
    describe_gauge!(
        "bus_requests_waiting",
        "Requests to a worker sent and not yet answered, timed out or given up by their caller."
    );
    describe_counter!(
        "bus_domain_events_total",
        "Domain events for backends, by event and outcome: published (some queue took it), \
         returned (published, but no queue is bound to its key) or skipped (not published: \
         its key was returned within the last second)."
    );
    describe_histogram!(
        "bus_request_batch_size",
        "Requests sent to a worker in one broker message (the edge's per-shard batching)."
    );
}

/// Lets a repeated report through the first time, then at most once per `every`: for a failure
/// that retrying alone will not fix (refused credentials, an untrusted certificate), said once
/// and then as a reminder rather than at every attempt.
pub(crate) struct Throttle {
    every: Duration,
    last: Option<tokio::time::Instant>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    pub(crate) fn ready(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            return false;
        }
        self.last = Some(now);
        true
    }
}
