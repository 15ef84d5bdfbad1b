//! Throughput of the messages worker alone: how many `message.send` commands per second it
//! persists through the real broker and PostgreSQL, with 1 or more worker copies.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/bench_messages [copies=1] [messages=50000] [conversations=64] [in_flight=2000]
//! ```
//!
//! It makes a fresh database and vhost, starts the worker copies (release build), creates the
//! conversations, then sends every command as a request straight to the shard queues (no edge
//! in the way), keeping `in_flight` requests outstanding, and times from the first send to
//! the last reply. It then checks the database: exactly `messages` rows, each conversation's
//! seq gapless. Prints one line of figures.

use std::{sync::Arc, time::Instant};

use switchboard::{
    Bus, Config, Shutdown, backend,
    contract::{
        ConversationId,
        bus::{CreateConversation, SendMessage},
    },
};
use switchboard_tests::{Bin, TestEnv};
use tokio::sync::Semaphore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let copies = args.first().copied().unwrap_or(1);
    let messages = args.get(1).copied().unwrap_or(50_000);
    let conversations = args.get(2).copied().unwrap_or(64);
    let in_flight = args.get(3).copied().unwrap_or(2_000);

    let env = TestEnv::new().await;
    let mut workers = Vec::new();
    for _ in 0..copies {
        workers.push(env.spawn_ready(Bin::Messages, &[]).await);
    }
    let config = Config { rabbitmq_vhost: env.vhost.clone(), ..Config::default() };
    let shutdown = Shutdown::new();
    let bus = Bus::start(&config, "bench-messages", &shutdown);
    bus.wait_ready().await;

    let timeout = std::time::Duration::from_secs(60);
    let mut ids = Vec::new();
    for i in 0..conversations {
        let create = CreateConversation {
            participants: vec![format!("a{i}").parse()?, format!("b{i}").parse()?],
            match_id: None,
        };
        ids.push(backend::create_conversation(&bus, &create, timeout).await?);
    }
    // Let every copy take its share of the shards before timing.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let window = Arc::new(Semaphore::new(in_flight));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(messages);
    for n in 0..messages {
        let permit = window.clone().acquire_owned().await?;
        let bus = bus.clone();
        let conversation: ConversationId = ids[n % ids.len()];
        tasks.push(tokio::spawn(async move {
            let command = SendMessage {
                conversation_id: conversation,
                sender_id: format!("a{}", n % conversations).parse().expect("valid"),
                sender_socket: None,
                content: format!("benchmark message {n}").try_into().expect("valid"),
                client_message_id: None,
                expires_at: chrono::Utc::now() + chrono::Duration::seconds(60),
            };
            let result = bus.request(&command, timeout).await;
            drop(permit);
            result.is_ok()
        }));
    }
    let mut failed = 0;
    for task in tasks {
        if !task.await? {
            failed += 1;
        }
    }
    let elapsed = started.elapsed();

    let db = env.db().await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages").fetch_one(&db).await?;
    let (gapless,): (bool,) = sqlx::query_as(
        "SELECT bool_and(n = max_seq) FROM (SELECT count(*) AS n, max(seq) AS max_seq FROM messages GROUP BY conversation_id) s",
    )
    .fetch_one(&db)
    .await?;
    println!(
        "messages worker: copies={copies} messages={messages} conversations={conversations} in_flight={in_flight} \
         elapsed={:.2}s rate={:.0} msg/s failed={failed} rows={rows} gapless={gapless} cores={}",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    shutdown.trigger();
    bus.close().await;
    db.close().await;
    drop(workers);
    Ok(())
}
