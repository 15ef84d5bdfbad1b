//! `connections`: many authenticated, idle websocket connections, each its own user, held on
//! the edges; how fast they connect, whether they are all still there after a while, and the
//! edges' resident memory per connection. With `--restart-command`, the edges are then
//! restarted under them, and every client reconnects the way `socket.io-client` does: how long
//! until all are back (issue 15: 19,000 on one edge within 10 s).

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
    /// Run after the hold (`sh -c`): stops the edges and starts them again, and returns once
    /// they are ready. Every client then reconnects as `socket.io-client` does.
    #[arg(long)]
    pub restart_command: Option<String>,
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
    /// From `--restart-command`.
    pub restart: Option<RestartReport>,
}

/// The edges restarted under the held connections.
#[derive(Clone, Debug, Serialize)]
pub struct RestartReport {
    /// Clients connected again.
    pub reconnected: usize,
    /// Clients that gave up (after [`RECONNECT_ATTEMPTS`]).
    pub failed: usize,
    /// How long the restart command took (stop, start, ready).
    pub restart_s: f64,
    /// From the restart command's return (the edges ready) to the last client back.
    pub all_back_after_ready_s: f64,
    /// From the restart command's start to the last client back.
    pub all_back_after_stop_s: f64,
}

/// Reconnection attempts per client before it gives up.
pub const RECONNECT_ATTEMPTS: u32 = 20;

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
            async move { (i, system.connect(i, &user, counting(sessions)).await) }
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
                sockets.push((i, socket));
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
    let held = sockets.iter().filter(|(_, s)| !s.is_closed()).count();
    let rss_after: Vec<u64> = args.edge_pids.iter().map(|&pid| rss(pid)).collect();
    let restart = match &args.restart_command {
        Some(command) => {
            let (restart, again) = restart_under(&system, command, sockets, sessions.clone()).await?;
            sockets = again;
            Some(restart)
        }
        None => None,
    };
    let edges = args
        .edge_pids
        .iter()
        .zip(before)
        .zip(per_edge.iter())
        .zip(rss_after)
        .map(|(((&pid, rss_before_kib), &connections), rss_after_kib)| EdgeMemory {
            pid,
            connections,
            rss_before_kib,
            rss_after_kib,
            kib_per_connection: rss_after_kib.saturating_sub(rss_before_kib) as f64
                / connections.max(1) as f64,
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
        restart,
    };
    for (_, socket) in &sockets {
        socket.close();
    }
    // Give the closes a moment to leave before the process exits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(report)
}

/// Counts the `session` events a client receives.
fn counting(sessions: Arc<AtomicU64>) -> crate::sio::OnEvent {
    Arc::new(move |event: &str, _: &RawValue| {
        if event == "session" {
            sessions.fetch_add(1, Relaxed);
        }
    })
}

/// Runs the restart command while every client waits for its connection to close and then
/// reconnects with `socket.io-client`'s delays (1 s doubling up to 5 s, each ±50 %). Returns
/// the figures and the new connections.
async fn restart_under(
    system: &System,
    command: &str,
    sockets: Vec<(usize, crate::sio::Socket)>,
    sessions: Arc<AtomicU64>,
) -> anyhow::Result<(RestartReport, Vec<(usize, crate::sio::Socket)>)> {
    eprintln!("connections: restarting the edges under {} connections", sockets.len());
    let stopped = Instant::now();
    let restarting = async {
        let status = tokio::process::Command::new("sh").arg("-c").arg(command).status().await;
        (status, Instant::now())
    };
    let reconnecting = futures::future::join_all(sockets.into_iter().map(|(i, old)| {
        let (user, sessions) = (system.user(&format!("c{i}")), sessions.clone());
        async move {
            old.closed().await;
            let mut last = None;
            for attempt in 0..RECONNECT_ATTEMPTS {
                let base = (1000u64 << attempt.min(3)).min(5000) as f64;
                tokio::time::sleep(Duration::from_millis((base * (0.5 + fastrand::f64())) as u64)).await;
                match system.connect(i, &user, counting(sessions.clone())).await {
                    Ok(socket) => return (i, Ok((socket, Instant::now()))),
                    Err(error) => last = Some(error),
                }
            }
            (i, Err(last.unwrap_or_else(|| anyhow::anyhow!("never tried"))))
        }
    }));
    let ((status, ready), results) = tokio::join!(restarting, reconnecting);
    let status = status?;
    anyhow::ensure!(status.success(), "the restart command failed: {status}");
    let mut again = Vec::new();
    let mut last_back = ready;
    let mut failed = 0;
    for (i, result) in results {
        match result {
            Ok((socket, at)) => {
                last_back = last_back.max(at);
                again.push((i, socket));
            }
            Err(error) => {
                if failed < 5 {
                    eprintln!("connections: after the restart: {error:#}");
                }
                failed += 1;
            }
        }
    }
    let report = RestartReport {
        reconnected: again.len(),
        failed,
        restart_s: (ready - stopped).as_secs_f64(),
        all_back_after_ready_s: (last_back - ready).as_secs_f64(),
        all_back_after_stop_s: (last_back - stopped).as_secs_f64(),
    };
    eprintln!(
        "connections: {} back {:.1} s after the edges were ready ({failed} gave up)",
        report.reconnected, report.all_back_after_ready_s
    );
    Ok((report, again))
}
