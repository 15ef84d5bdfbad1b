//! `connections`: many authenticated, idle websocket connections, each its own user, held on
//! the edges; how fast they connect, whether they are all still there after a while, and the
//! edges' resident memory per connection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    measure,
    system::{System, SystemArgs},
};

#[derive(Clone, Debug, clap::Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Connections to open, spread over the edges.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds to hold the connections idle before measuring (past a ping interval shows they
    /// stay up).
    #[arg(long, default_value_t = 30.0)]
    pub hold: f64,
    /// The edges' process ids, in the order of `--edges`, to read their resident memory.
    #[arg(long, value_delimiter = ',')]
    pub edge_pids: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionsReport {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    /// Still open after the hold.
    pub held: usize,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub hold_s: f64,
    pub edges: Vec<EdgeMemory>,
    /// `session` events received (one per connection is expected).
    pub sessions: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EdgeMemory {
    pub pid: u32,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// (after − before) / connections.
    pub kib_per_connection: f64,
}

pub async fn run(args: ConnectionsArgs) -> anyhow::Result<ConnectionsReport> {
    let system = System::new(args.system.clone());
    let rss = |pid: u32| measure::read_process(pid).map_or(0, |(_, usage)| usage.rss_kib);
    let before: Vec<u64> = args.edge_pids.iter().map(|&pid| rss(pid)).collect();
    let sessions = Arc::new(AtomicU64::new(0));

    eprintln!("connections: opening {} to {:?}", args.count, system.edges());
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..args.count)
        .map(|i| {
            let sessions = sessions.clone();
            let user = system.user(&format!("c{i}"));
            let system = &system;
            async move {
                let on_event = Arc::new(move |event: &str, _: &RawValue| {
                    if event == "session" {
                        sessions.fetch_add(1, Relaxed);
                    }
                });
                (i, system.connect(i, &user, on_event).await)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let connect_s = started.elapsed().as_secs_f64();
    let mut sockets = Vec::new();
    let edge_count = system.edges().len();
    let mut per_edge = vec![0usize; edge_count];
    let mut failed = 0;
    for (i, result) in results {
        match result {
            Ok(socket) => {
                per_edge[i % edge_count] += 1;
                sockets.push(socket);
            }
            Err(error) => {
                if failed < 5 {
                    eprintln!("connections: {error:#}");
                }
                failed += 1;
            }
        }
    }
    eprintln!(
        "connections: {} open in {connect_s:.1} s, {failed} failed; holding {} s",
        sockets.len(),
        args.hold
    );
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let held = sockets.iter().filter(|s| !s.is_closed()).count();
    let edges = args
        .edge_pids
        .iter()
        .zip(before)
        .zip(per_edge.iter())
        .map(|((&pid, rss_before_kib), &connections)| {
            let rss_after_kib = rss(pid);
            EdgeMemory {
                pid,
                connections,
                rss_before_kib,
                rss_after_kib,
                kib_per_connection: rss_after_kib.saturating_sub(rss_before_kib) as f64
                    / connections.max(1) as f64,
            }
        })
        .collect();
    let report = ConnectionsReport {
        requested: args.count,
        connected: sockets.len(),
        failed,
        held,
        connect_s,
        connects_per_s: sockets.len() as f64 / connect_s,
        hold_s: args.hold,
        edges,
        sessions: sessions.load(Relaxed),
    };
    for socket in &sockets {
        socket.close();
    }
    // Give the closes a moment to leave before the process exits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(report)
}
