//! Throughput of one presence worker: connects and disconnects per second it handles, with the
//! correct final state.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/bench_presence [users=20000] [edges=3]
//! ```
//!
//! It starts a messages worker (presence asks it for contacts) and a presence worker (release
//! builds) on a fresh database and vhost, plays `edges` edges that announce themselves, then
//! publishes as fast as it can: every user connects (spread over the edges), then every user
//! but the first tenth disconnects. It times until the worker has handled every change
//! (its `presence_changes_total`), then checks `presence_users_online` is exactly the tenth
//! left connected. Prints one line of figures.

use std::time::{Duration, Instant};

use switchboard::{
    Bus, Config, Shutdown,
    bus::Durability,
    contract::bus::{EdgeReport, PresenceChange},
};
use switchboard_tests::{Bin, Running, TestEnv, eventually};

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn read(presence: &Running, name: &str) -> f64 {
    metric(&presence.get("/metrics").await.1, name).unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let users = args.first().copied().unwrap_or(20_000);
    let edges = args.get(1).copied().unwrap_or(3).max(1);
    let stay = users / 10;

    let env = TestEnv::new().await;
    let clocks = [("PRESENCE_REPORT_INTERVAL_MS", "1000")];
    let _messages = env.spawn_ready(Bin::Messages, &clocks).await;
    let presence = env.spawn_ready(Bin::Presence, &clocks).await;
    let config = Config { rabbitmq_vhost: env.vhost.clone(), ..Config::default() };
    let shutdown = Shutdown::new();
    let bus = Bus::start(&config, "bench-presence", &shutdown);
    bus.wait_ready().await;

    // The simulated edges say who they are, with a long interval so they stay alive throughout.
    let edge_ids: Vec<uuid::Uuid> = (0..edges).map(|_| uuid::Uuid::now_v7()).collect();
    for edge in &edge_ids {
        let report = EdgeReport { edge_id: *edge, users: Vec::new(), interval_ms: 600_000 };
        bus.publish(&report, Durability::Confirmed).await?;
    }
    eventually("presence to warm up", Duration::from_secs(30), || async {
        (read(&presence, "presence_warm").await == 1.0).then_some(())
    })
    .await;

    let changes = users + (users - stay);
    let started = Instant::now();
    let change = |n: usize, online: bool| PresenceChange {
        edge_id: edge_ids[n % edges],
        user_id: format!("user-{n}").parse().expect("valid"),
        online,
        at: chrono::Utc::now(),
    };
    for n in 0..users {
        bus.publish(&change(n, true), Durability::Transient).await?;
    }
    for n in stay..users {
        bus.publish(&change(n, false), Durability::Transient).await?;
    }
    let published = started.elapsed();
    eventually("every change to be handled", Duration::from_secs(300), || async {
        (read(&presence, "presence_changes_total").await >= changes as f64).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let online = read(&presence, "presence_users_online").await;
    println!(
        "presence worker: users={users} edges={edges} changes={changes} published_in={:.2}s handled_in={:.2}s \
         rate={:.0} changes/s online_at_end={online} expected={stay} correct={} cores={}",
        published.as_secs_f64(),
        elapsed.as_secs_f64(),
        changes as f64 / elapsed.as_secs_f64(),
        online == stay as f64,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    shutdown.trigger();
    bus.close().await;
    Ok(())
}
