//! `presence`: users connect and disconnect as fast as the workers go, spread over the edges;
//! then every even user ends online and every odd one offline, and an observer who shares a
//! conversation with each of them checks the outcome two ways: its `presence:query` answer,
//! and the last `user:online` / `user:offline` it received per user. Both must match exactly.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};

use crate::{
    sio::Socket,
    system::{System, SystemArgs},
};

#[derive(Clone, Debug, clap::Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Users who come and go.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Connects and disconnects in progress at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after the churn before checking: the edges' `PRESENCE_OFFLINE_GRACE_MS`
    /// and a margin.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PresenceReport {
    pub users: usize,
    pub churn_s: f64,
    pub connects: u64,
    pub disconnects: u64,
    pub changes_per_s: f64,
    pub connect_errors: u64,
    /// Users whose `presence:query` answer differs from their final state.
    pub query_mismatches: usize,
    /// Users whose last presence event differs from their final state.
    pub event_mismatches: usize,
}

/// Connects user `i` if it is offline here, else disconnects it and waits until it is gone;
/// returns (connects, disconnects, failed connects).
async fn toggle(
    system: &System,
    user: &str,
    i: usize,
    sockets: &mut HashMap<usize, Socket>,
) -> (u64, u64, u64) {
    if let Some(socket) = sockets.remove(&i) {
        socket.close();
        socket.closed().await;
        return (0, 1, 0);
    }
    match system.connect(i, user, Arc::new(|_: &str, _: &RawValue| {})).await {
        Ok(socket) => {
            sockets.insert(i, socket);
            (1, 0, 0)
        }
        Err(_) => (0, 0, 1),
    }
}

pub async fn run(args: PresenceArgs) -> anyhow::Result<PresenceReport> {
    let system = System::new(args.system.clone());
    let observer = system.user("observer");
    let users: Vec<String> = (0..args.users).map(|i| system.user(&format!("p{i}"))).collect();
    eprintln!("presence: creating {} conversations with the observer", users.len());
    system.create_conversations(users.iter().map(|u| vec![observer.clone(), u.clone()]).collect()).await?;

    let last_event: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let events = last_event.clone();
    let watcher = system
        .connect(
            0,
            &observer,
            Arc::new(move |event: &str, data: &RawValue| {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Change {
                    user_id: String,
                }
                let online = match event {
                    "user:online" => true,
                    "user:offline" => false,
                    _ => return,
                };
                if let Ok(change) = serde_json::from_str::<Change>(data.get()) {
                    events.lock().expect("not poisoned").insert(change.user_id, online);
                }
            }),
        )
        .await?;

    // Each worker owns a disjoint slice of the users, so one user's connects and disconnects
    // happen in a known order.
    let started = Instant::now();
    let churn = Duration::from_secs_f64(args.duration);
    let workers = (0..args.concurrency).map(|w| {
        let system = &system;
        let mine: Vec<usize> = (w..users.len()).step_by(args.concurrency).collect();
        let users = &users;
        async move {
            let mut sockets: HashMap<usize, Socket> = HashMap::new();
            let (mut connects, mut disconnects, mut errors) = (0u64, 0u64, 0u64);
            while !mine.is_empty() && started.elapsed() < churn {
                let i = mine[fastrand::usize(..mine.len())];
                let (c, d, e) = toggle(system, &users[i], i, &mut sockets).await;
                (connects, disconnects, errors) = (connects + c, disconnects + d, errors + e);
            }
            let churn_s = started.elapsed().as_secs_f64();
            // The final state: even users online, odd users offline.
            for &i in &mine {
                if i.is_multiple_of(2) != sockets.contains_key(&i) {
                    let (c, d, e) = toggle(system, &users[i], i, &mut sockets).await;
                    (connects, disconnects, errors) = (connects + c, disconnects + d, errors + e);
                }
            }
            (connects, disconnects, errors, churn_s, sockets)
        }
    });
    let results = futures::future::join_all(workers).await;
    let churn_s = results.iter().map(|r| r.3).fold(0.0, f64::max);
    let (connects, disconnects, connect_errors) =
        results.iter().fold((0, 0, 0), |(c, d, e), r| (c + r.0, d + r.1, e + r.2));
    let held: Vec<Socket> = results.into_iter().flat_map(|r| r.4.into_values()).collect();
    eprintln!(
        "presence: {connects} connects, {disconnects} disconnects in {churn_s:.1} s; {} left online; settling",
        held.len()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;

    #[derive(Deserialize)]
    struct Answer {
        users: HashMap<String, Status>,
    }
    #[derive(Deserialize)]
    struct Status {
        online: bool,
    }
    let mut answered: HashMap<String, bool> = HashMap::new();
    for chunk in users.chunks(200) {
        let reply = watcher.ask("presence:query", &json!({ "userIds": chunk })).await?;
        let answer: Answer =
            serde_json::from_str(&reply).with_context(|| format!("presence:query said {reply}"))?;
        answered.extend(answer.users.into_iter().map(|(id, s)| (id, s.online)));
    }
    let last_event = last_event.lock().expect("not poisoned").clone();
    let expected = |i: usize| i.is_multiple_of(2);
    let query_mismatches =
        users.iter().enumerate().filter(|(i, u)| answered.get(*u) != Some(&expected(*i))).count();
    let event_mismatches = users
        .iter()
        .enumerate()
        .filter(|(i, u)| last_event.get(*u).copied().unwrap_or(false) != expected(*i))
        .count();
    for (i, user) in users.iter().enumerate() {
        let (query, event) = (answered.get(user), last_event.get(user));
        if query != Some(&expected(i)) || event.copied().unwrap_or(false) != expected(i) {
            eprintln!(
                "presence: {user} should be online={}: query says {query:?}, last event {event:?}",
                expected(i)
            );
        }
    }
    for socket in held.iter().chain([&watcher]) {
        socket.close();
    }
    let report = PresenceReport {
        users: args.users,
        churn_s,
        connects,
        disconnects,
        changes_per_s: (connects + disconnects) as f64 / churn_s,
        connect_errors,
        query_mismatches,
        event_mismatches,
    };
    eprintln!(
        "presence: {:.0} connects+disconnects/s; mismatches: query {}, events {}",
        report.changes_per_s, report.query_mismatches, report.event_mismatches
    );
    Ok(report)
}
