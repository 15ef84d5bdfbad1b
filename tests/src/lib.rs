//! The end-to-end test harness: real binaries against the real RabbitMQ and PostgreSQL.
//!
//! Each test makes a [`TestEnv`]: its own database (migrated by the first binary that starts)
//! and its own RabbitMQ vhost, so tests run in parallel and never see each other's messages.
//! [`TestEnv::spawn`] starts a binary as cargo built it, on a free port (the binary binds port 0
//! and logs the address it got), and [`Running::wait_ready`] polls `/readyz`: no fixed sleeps.
//! Clients are driven by the official `socket.io-client` through [`node::Driver`].
//!
//! Everything is removed when the test ends: processes are killed, the database dropped, the
//! vhost deleted. When a test fails, the logs of its processes are printed.

pub mod node;
pub mod process;
pub mod rabbit;

use std::time::Duration;

pub use node::Driver;
pub use process::{Bin, Running};

/// The connection the harness uses to create and drop test databases. The role needs
/// CREATEDB; `deploy/services.sh` creates it.
pub fn admin_database_url() -> String {
    std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://switchboard:switchboard@127.0.0.1:5432/switchboard".into())
}

/// The `socket.io-client` options of `user`, signed in with the session token
/// `<user>-token` (see [`TestEnv::add_session`]) over websocket.
pub fn as_user(user: &str) -> serde_json::Value {
    serde_json::json!({ "transports": ["websocket"], "auth": { "token": format!("{user}-token") } })
}

/// The ingress key every test edge accepts.
pub const INGRESS_KEY: &str = "test-ingress-key";

/// One test's private world.
pub struct TestEnv {
    /// Unique per test; used for the database and the vhost.
    pub name: String,
    pub database_url: String,
    pub vhost: String,
    pub rabbit: rabbit::Admin,
    /// A pool on the test's database, made on first use and kept.
    pool: tokio::sync::OnceCell<sqlx::PgPool>,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let name = format!("sbt_{}", uuid::Uuid::now_v7().simple());
        let admin = admin_database_url();
        let mut conn = sqlx::postgres::PgConnection::connect_with(
            &admin.parse().expect("SWITCHBOARD_TEST_DATABASE_URL is a URL"),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin} (run deploy/services.sh): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let base = admin.rsplit_once('/').map(|(base, _)| base).expect("a database URL has a path");
        let rabbit = rabbit::Admin::from_env();
        rabbit.create_vhost(&name).await;
        TestEnv {
            database_url: format!("{base}/{name}"),
            vhost: name.clone(),
            name,
            rabbit,
            pool: tokio::sync::OnceCell::new(),
        }
    }

    /// A pool on the test's database (for arranging data and checking results).
    pub async fn db(&self) -> sqlx::PgPool {
        self.pool
            .get_or_init(|| async {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect(&self.database_url)
                    .await
                    .expect("connect to the test database")
            })
            .await
            .clone()
    }

    /// The single number a counting query returns (`SELECT count(*) ...`).
    pub async fn count(&self, sql: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db().await)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        n
    }

    /// The environment every binary of this test gets; `spawn` adds per-process variables.
    pub fn base_env(&self) -> Vec<(String, String)> {
        [
            ("RABBITMQ_VHOST", self.vhost.as_str()),
            ("DATABASE_URL", self.database_url.as_str()),
            ("LISTEN_HOST", "127.0.0.1"),
            ("WEBSOCKET_PORT", "0"),
            ("METRICS_PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("SHUTDOWN_GRACE_MS", "5000"),
            ("INGRESS_API_KEYS", INGRESS_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Starts `bin` with the base environment plus `extra` (which wins), and waits until it
    /// listens. It need not be ready yet: see [`Running::wait_ready`].
    pub async fn spawn(&self, bin: Bin, extra: &[(&str, &str)]) -> Running {
        let mut env = self.base_env();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Running::start(bin, &env).await
    }

    /// Starts `bin` and waits until it is ready.
    pub async fn spawn_ready(&self, bin: Bin, extra: &[(&str, &str)]) -> Running {
        let running = self.spawn(bin, extra).await;
        running.wait_ready().await;
        running
    }

    /// Adds a session to the default `sessions` table (database auth mode).
    pub async fn add_session(&self, token: &str, user_id: &str, valid_for: chrono::Duration) {
        let db = self.db().await;
        sqlx::query("INSERT INTO sessions (token, user_id, expires_at) VALUES ($1, $2, now() + $3)")
            .bind(token)
            .bind(user_id)
            .bind(valid_for)
            .execute(&db)
            .await
            .expect("insert a session (is the schema migrated? start a binary first)");
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on its own futures: clean up
        // on a thread with a runtime of its own, and with clients of its own (a client's
        // pooled connections belong to the runtime that made them, which is blocked here).
        let rabbit = rabbit::Admin::from_env();
        let cleanup = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                rabbit.delete_vhost(&name).await;
                if let Ok(mut conn) =
                    sqlx::postgres::PgConnection::connect_with(&admin_database_url().parse().expect("a URL"))
                        .await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

use sqlx::Connection as _;

impl TestEnv {
    /// A bus handle on the test's vhost, connected, as a backend using the library has.
    pub async fn bus(&self, name: &str) -> switchboard::Bus {
        let config =
            switchboard::Config { rabbitmq_vhost: self.vhost.clone(), ..switchboard::Config::default() };
        let bus = switchboard::Bus::start(&config, name, &switchboard::Shutdown::new());
        assert!(bus.wait_ready().await, "the test's bus connects");
        bus
    }

    /// Creates a conversation through the ingress of `edge` (a messages worker must run).
    pub async fn create_conversation(&self, edge: &Running, participants: &[&str]) -> String {
        let (status, body) =
            edge.post("/api/v1/conversations", serde_json::json!({ "participants": participants })).await;
        assert_eq!(status, 201, "create a conversation: {body}");
        body["conversationId"].as_str().expect("conversationId").to_owned()
    }
}

impl TestEnv {
    /// Publishes `body` as it stands, persistent and confirmed, with the AMQP `type` `kind`:
    /// what a publisher in another language (or a broken one) may send, which the library's
    /// typed publishing cannot make.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, kind: &str, body: &[u8]) {
        use lapin::{BasicProperties, Connection, ConnectionProperties, options::*};
        let uri = format!("amqp://guest:guest@127.0.0.1:5672/{}", rabbit::encode(&self.vhost));
        let connection =
            Connection::connect(&uri, ConnectionProperties::default()).await.expect("connect to the broker");
        let channel = connection.create_channel().await.expect("a channel");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        let properties = BasicProperties::default()
            .with_type(kind.into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
        assert!(confirm.is_ack(), "the broker took the message");
        let _ = connection.close(200, "done".into()).await;
    }

    /// A private queue of this test on `events.topic`, bound to `key` (a topic pattern), as a
    /// backend or a worker binds one: what the processes publish there from now on.
    pub async fn listen(&self, key: &str) -> Listener {
        use futures::StreamExt;
        use lapin::{Connection, ConnectionProperties, options::*, types::FieldTable};
        let uri = format!("amqp://guest:guest@127.0.0.1:5672/{}", rabbit::encode(&self.vhost));
        let connection =
            Connection::connect(&uri, ConnectionProperties::default()).await.expect("connect to the broker");
        let channel = connection.create_channel().await.expect("a channel");
        let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
        let queue =
            channel.queue_declare("".into(), exclusive, FieldTable::default()).await.expect("a queue");
        let topic = switchboard::bus::topology::EVENTS_TOPIC;
        let bind = QueueBindOptions::default();
        channel
            .queue_bind(queue.name().clone(), topic.into(), key.into(), bind, FieldTable::default())
            .await
            .expect("bind the queue");
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut consumer = channel
            .basic_consume(queue.name().clone(), "".into(), no_ack, FieldTable::default())
            .await
            .expect("consume");
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let envelope = serde_json::from_slice(&delivery.data).expect("a JSON envelope");
                let _ = sender.send((delivery.routing_key.to_string(), envelope));
            }
        });
        Listener { received, _connection: connection }
    }

    /// The messages parked in the dead-letter queue so far (left there).
    pub async fn dead_letters(&self) -> Vec<serde_json::Value> {
        self.rabbit.peek(&self.vhost, switchboard::bus::dead_letter::QUEUE, 1000).await
    }
}

/// What a [`TestEnv::listen`] queue received: `(routing key, envelope)` in arrival order.
pub struct Listener {
    received: tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    _connection: lapin::Connection,
}

impl Listener {
    /// The next message, or `None` when none came within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<(String, serde_json::Value)> {
        tokio::time::timeout(timeout, self.received.recv()).await.ok().flatten()
    }
}

/// A bus envelope around `data`, written by hand (for [`TestEnv::publish_raw`]).
pub fn raw_envelope(kind: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "v": 1, "kind": kind, "id": uuid::Uuid::now_v7(), "sentAt": chrono::Utc::now(), "data": data
    })
    .to_string()
    .into_bytes()
}

/// Panics unless the committed file `relative` (to the repository) is exactly `fresh`, what
/// the code generates now; the message names the first differing line, what the file is
/// generated from (`from`) and the command that regenerates it.
pub fn assert_generated_file_is_current(relative: &str, fresh: &str, from: &str, regenerate: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == fresh {
        return;
    }
    let (was, now): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), fresh.lines().collect());
    let line = (0..was.len().max(now.len()))
        .find(|&i| was.get(i) != now.get(i))
        .unwrap_or_else(|| was.len().min(now.len()));
    let (was, now) = (was.get(line).copied().unwrap_or("<end>"), now.get(line).copied().unwrap_or("<end>"));
    panic!(
        "{relative} is out of date with {from}. Run `{regenerate}` and commit the result.\n\
         First difference, line {}:\n  file:      {was}\n  generated: {now}",
        line + 1
    );
}

/// Polls `check` until it returns `Some`, for at most `timeout`; panics with `what` otherwise.
/// Assert eventual effects with this, never with a sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 17: every metric `process` exports now has HELP text, is listed in `docs/metrics.md`
/// (as `` `name` `` in its table), and the process metrics are there. Call it after some
/// traffic, so that the metrics a flow touches exist.
pub async fn assert_metrics_documented(process: &Running) {
    let docs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let docs = std::fs::read_to_string(docs_path).expect("docs/metrics.md");
    let (status, text) = process.get("/metrics").await;
    assert_eq!(status, 200, "{} /metrics", process.bin.name());
    let mut families = std::collections::BTreeSet::new();
    let mut helped = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.trim().is_empty(), "{}: {name} has an empty HELP", process.bin.name());
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    for process_metric in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(families.contains(process_metric), "{} lacks {process_metric}", process.bin.name());
    }
    for family in &families {
        assert!(helped.contains(family), "{}: {family} has no HELP text", process.bin.name());
        assert!(
            docs.contains(&format!("`{family}`")),
            "{}: {family} is not in docs/metrics.md",
            process.bin.name()
        );
    }
}
