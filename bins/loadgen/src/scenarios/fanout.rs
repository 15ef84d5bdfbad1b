//! `fanout`: one conversation whose members have several sockets each, spread over the edges;
//! one more socket sends into it. Every message reaches every other socket, so deliveries per
//! second is messages per second times the sockets in the room.
//!
//! Each receiving socket checks that it sees the conversation's `seq` one after another, and at
//! the end that it received every acknowledged message exactly once.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures::{StreamExt as _, stream::FuturesUnordered};
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};
use tokio_util::sync::CancellationToken;

use crate::{
    measure::{self, Latency, Recorder},
    system::{System, SystemArgs, connect_all},
};

#[derive(Clone, Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Participants of the conversation (2 to 100, the contract's limit).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Sockets each participant holds.
    #[arg(long, default_value_t = 5)]
    pub sockets_per_member: usize,
    /// Sends the sender keeps unacknowledged.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    pub members: usize,
    pub sockets: usize,
    pub edges: usize,
    pub measured_s: f64,
    pub messages_acked: u64,
    pub messages_per_s: f64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub latency: Latency,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

#[derive(Default)]
struct Seen {
    last_seq: u64,
    received: u64,
    duplicated: u64,
    out_of_order: u64,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<FanoutReport> {
    anyhow::ensure!((2..=100).contains(&args.members), "--members must be 2 to 100");
    let system = System::new(args.system.clone());
    let members: Vec<String> = (0..args.members).map(|i| system.user(&format!("f{i}"))).collect();
    let conversation_id = system.create_conversations(vec![members.clone()]).await?.remove(0);

    let delivered = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new(Recorder::default()));
    let sockets_users: Vec<String> =
        (0..args.members * args.sockets_per_member).map(|i| members[i % args.members].clone()).collect();
    let seen: Vec<Arc<Mutex<Seen>>> = (0..sockets_users.len()).map(|_| Arc::default()).collect();
    eprintln!("fanout: connecting {} sockets over {} edges", sockets_users.len(), system.edges().len());
    let sockets = connect_all(&system, &sockets_users, 64, |i| {
        let seen = seen[i].clone();
        let delivered = delivered.clone();
        let measuring = measuring.clone();
        let latency = latency.clone();
        Arc::new(move |event: &str, data: &RawValue| {
            if event != "message:new" {
                return;
            }
            #[derive(Deserialize)]
            struct New<'a> {
                seq: u64,
                content: &'a str,
            }
            let Ok(message) = serde_json::from_str::<New>(data.get()) else { return };
            let mut s = seen.lock().expect("not poisoned");
            if message.seq <= s.last_seq {
                s.duplicated += 1;
            } else {
                if message.seq != s.last_seq + 1 {
                    s.out_of_order += 1;
                }
                s.last_seq = message.seq;
                s.received += 1;
            }
            drop(s);
            delivered.fetch_add(1, Relaxed);
            if measuring.load(Relaxed)
                && let Some(age) = measure::age_micros(message.content)
            {
                latency.lock().expect("not poisoned").record_micros(age);
            }
        })
    })
    .await?;
    let sender = system.connect(sockets.len(), &members[0], Arc::new(|_: &str, _: &RawValue| {})).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let acked = AtomicU64::new(0);
    let stop = CancellationToken::new();
    let send = |n: u64| {
        let sender = &sender;
        let acked = &acked;
        let conversation_id = &conversation_id;
        async move {
            let (_, content) = measure::stamped(n, 0);
            let payload = json!({ "conversationId": conversation_id, "content": content });
            if let Ok(reply) = sender.ask("message:send", &payload).await
                && reply.contains("\"success\":true")
            {
                acked.fetch_add(1, Relaxed);
            }
        }
    };
    let driving = async {
        let mut n = 0;
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < args.window && !stop.is_cancelled() {
                n += 1;
                in_flight.push(send(n));
            }
            if in_flight.next().await.is_none() {
                break;
            }
        }
    };
    let timing = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = (std::time::Instant::now(), acked.load(Relaxed), delivered.load(Relaxed));
        measuring.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        measuring.store(false, Relaxed);
        let end = (std::time::Instant::now(), acked.load(Relaxed), delivered.load(Relaxed));
        stop.cancel();
        (start, end)
    };
    let ((), (start, end)) = tokio::join!(driving, timing);
    let total = acked.load(Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && seen.iter().any(|s| s.lock().expect("not poisoned").received < total)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seconds = (end.0 - start.0).as_secs_f64();
    let mut report = FanoutReport {
        members: args.members,
        sockets: sockets.len(),
        edges: system.edges().len(),
        measured_s: seconds,
        messages_acked: total,
        messages_per_s: (end.1 - start.1) as f64 / seconds,
        deliveries: delivered.load(Relaxed),
        deliveries_per_s: (end.2 - start.2) as f64 / seconds,
        latency: latency.lock().expect("not poisoned").summary(),
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
    };
    for s in &seen {
        let s = s.lock().expect("not poisoned");
        report.lost += total.saturating_sub(s.received);
        report.duplicated += s.duplicated;
        report.out_of_order += s.out_of_order;
    }
    for socket in sockets.iter().chain([&sender]) {
        socket.close();
    }
    eprintln!(
        "fanout: {:.0} deliveries/s ({:.0} messages/s to {} sockets), lost {} duplicated {} out of order {}",
        report.deliveries_per_s,
        report.messages_per_s,
        report.sockets,
        report.lost,
        report.duplicated,
        report.out_of_order
    );
    Ok(report)
}
