//! The process skeleton every binary shares (issue 2): readiness, configuration errors,
//! broker loss and return, SIGTERM, concurrent migrations, and the first Socket.IO test.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use switchboard_tests::{Bin, Driver, Running, TestEnv};

#[tokio::test]
async fn every_binary_becomes_ready_and_serves_health_and_metrics() {
    let env = TestEnv::new().await;
    let mut running = Vec::new();
    for bin in Bin::ALL {
        running.push(env.spawn(bin, &[]).await);
    }
    for process in &running {
        process.wait_ready().await;
        assert_eq!(process.get("/healthz").await.0, 200, "{}", process.bin.name());
        let (status, body) = process.get("/readyz").await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#), "{}", process.bin.name());
        let (status, metrics) = process.get("/metrics").await;
        assert_eq!(status, 200, "{}", process.bin.name());
        let build_info = format!("switchboard_build_info{{binary=\"{}\"", process.bin.name());
        assert!(metrics.contains(&build_info), "{} metrics lack {build_info}: {metrics}", process.bin.name());
    }
    // The exchanges of docs/reference.md, Processes exist, declared by the processes themselves.
    let exchanges = env.rabbit.exchanges(&env.vhost).await;
    for name in ["user.direct", "events.topic", "presence.fanout"] {
        assert!(exchanges.iter().any(|e| e == name), "{name} missing from {exchanges:?}");
    }
}

#[tokio::test]
async fn a_bad_setting_exits_64_naming_the_variable_before_binding() {
    let env = TestEnv::new().await;
    type Case<'a> = (Bin, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (Bin::Edge, &[("RABBITMQ_PORT", "not-a-port")], "RABBITMQ_PORT"),
        (Bin::Messages, &[("RABBITMQ_PORT", "99999")], "RABBITMQ_PORT"),
        (Bin::Presence, &[("SHUTDOWN_GRACE_MS", "soon")], "SHUTDOWN_GRACE_MS"),
        (Bin::Notifier, &[("DATABASE_MIGRATE", "perhaps")], "DATABASE_MIGRATE"),
        (Bin::Edge, &[("AUTH_MODE", "jwt")], "AUTH_JWT_SECRET"),
        (Bin::Edge, &[("AUTH_MODE", "ldap")], "AUTH_MODE"),
        (Bin::Messages, &[("DATABASE_URL", "mysql://nope")], "DATABASE_URL"),
    ];
    for (bin, extra, variable) in cases {
        let mut vars = env.base_env();
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let (status, output) = Running::run_to_exit(*bin, &vars, Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(64), "{} with {extra:?}: {output:?}", bin.name());
        assert_eq!(output.len(), 1, "exactly one line: {output:?}");
        assert!(
            output[0].starts_with(&format!("{}: invalid configuration: {variable}: ", bin.name())),
            "{} with {extra:?} printed {:?}",
            bin.name(),
            output[0]
        );
        // One line, nothing else: in particular no "listening" (no port was bound).
    }
}

#[tokio::test]
async fn secrets_are_never_printed() {
    let env = TestEnv::new().await;
    let mut vars = env.base_env();
    vars.push(("AUTH_MODE".into(), "jwt".into()));
    vars.push(("AUTH_JWT_SECRET".into(), "super-secret-value-super-secret-value".into()));
    vars.push(("RABBITMQ_PORT".into(), "x".into()));
    let (status, output) = Running::run_to_exit(Bin::Edge, &vars, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(64));
    assert!(!output.join("\n").contains("super-secret-value"));
}

#[tokio::test]
async fn readiness_follows_the_broker_away_and_back() {
    let env = TestEnv::new().await;
    let workers = [env.spawn_ready(Bin::Messages, &[]).await, env.spawn_ready(Bin::Edge, &[]).await];
    // Deleting the vhost makes the broker close every connection to it, and refuse new ones.
    env.rabbit.delete_vhost(&env.vhost).await;
    for process in &workers {
        process.wait_readyz(503, Duration::from_secs(10)).await;
        let (_, body) = process.get("/readyz").await;
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["status"], "not ready");
        assert!(body["failing"]["bus"].is_string(), "{body}");
        assert!(body["failing"].get("database").is_none(), "{body}");
        assert_eq!(process.get("/healthz").await.0, 200, "alive while not ready");
    }
    env.rabbit.create_vhost(&env.vhost).await;
    for process in &workers {
        // Backoff tops out at 1 s between attempts.
        process.wait_readyz(200, Duration::from_secs(15)).await;
    }
}

#[tokio::test]
async fn sigterm_exits_zero_within_the_grace_period() {
    let env = TestEnv::new().await;
    for bin in Bin::ALL {
        let mut process = env.spawn_ready(bin, &[("SHUTDOWN_GRACE_MS", "3000")]).await;
        let started = tokio::time::Instant::now();
        process.signal(Signal::SIGTERM);
        let status = process.wait_exit(Duration::from_secs(5)).await;
        assert_eq!(status.code(), Some(0), "{} exit status", bin.name());
        assert!(started.elapsed() < Duration::from_secs(3), "{} took {:?}", bin.name(), started.elapsed());
        // The output pipe may still hold the last lines when the exit is seen.
        let what = format!("{} to log its stop", bin.name());
        switchboard_tests::eventually(&what, Duration::from_secs(2), || {
            let logged = process.logs().iter().any(|l| l.contains("\"stopped\""));
            async move { logged.then_some(()) }
        })
        .await;
    }
}

#[tokio::test]
async fn sigterm_exits_within_the_grace_period_while_a_transaction_waits_on_a_lock() {
    // A database that does not answer (here: a row another transaction holds) must not keep a
    // stopping worker alive: what is not done in time goes back to the queue.
    let env = TestEnv::new().await;
    let grace = Duration::from_millis(2000);
    let mut worker = env.spawn_ready(Bin::Messages, &[("SHUTDOWN_GRACE_MS", "2000")]).await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    env.add_session("alice-token", "alice", chrono::Duration::hours(1)).await;
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    let db = env.db().await;
    let mut holder = db.begin().await.expect("a transaction");
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1::uuid FOR UPDATE")
        .bind(&conversation)
        .execute(&mut *holder)
        .await
        .expect("lock the conversation");
    let mut driver = Driver::start().await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": "alice-token" } });
    driver.connect("a", &edge.url(), options).await.expect("alice connects");
    driver
        .emit_later("a", "message:send", json!({ "conversationId": conversation, "content": "held" }))
        .await;
    switchboard_tests::eventually("the worker's transaction to wait on the lock", Duration::from_secs(10), || async {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db)
        .await
        .expect("pg_stat_activity");
        (waiting > 0).then_some(())
    })
    .await;
    let started = tokio::time::Instant::now();
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(grace * 3).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "exit status");
    assert!(took <= grace + Duration::from_millis(300), "stopped after {took:?}, grace {grace:?}");
    holder.rollback().await.expect("release the row");
}

#[tokio::test]
async fn sigterm_exits_within_the_grace_period_while_the_broker_is_away() {
    let env = TestEnv::new().await;
    let grace = Duration::from_millis(2000);
    let mut running = Vec::new();
    for bin in Bin::ALL {
        running.push(env.spawn_ready(bin, &[("SHUTDOWN_GRACE_MS", "2000")]).await);
    }
    // The broker closes every connection to a deleted vhost and refuses new ones.
    env.rabbit.delete_vhost(&env.vhost).await;
    for process in &running {
        process.wait_readyz(503, Duration::from_secs(10)).await;
    }
    for process in &mut running {
        let started = tokio::time::Instant::now();
        process.signal(Signal::SIGTERM);
        let status = process.wait_exit(grace * 3).await;
        let took = started.elapsed();
        assert_eq!(status.code(), Some(0), "{} exit status", process.bin.name());
        assert!(took <= grace + Duration::from_millis(300), "{} stopped after {took:?}", process.bin.name());
    }
}

#[tokio::test]
async fn two_copies_starting_at_once_both_migrate_without_error() {
    let env = TestEnv::new().await;
    let (a, b) = tokio::join!(env.spawn(Bin::Messages, &[]), env.spawn(Bin::Notifier, &[]));
    let (c, d) = tokio::join!(env.spawn(Bin::Messages, &[]), env.spawn(Bin::Presence, &[]));
    let copies = [a, b, c, d];
    for copy in &copies {
        copy.wait_ready().await;
        let errors: Vec<_> =
            copy.logs().into_iter().filter(|l| l.contains("\"ERROR\"") || l.contains("\"WARN\"")).collect();
        assert!(errors.is_empty(), "{} logged: {errors:#?}", copy.bin.name());
    }
    let db = env.db().await;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&db)
            .await
            .expect("query");
    let expected: Vec<(i64, bool)> = switchboard::db::MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert_eq!(applied, expected);
}

#[tokio::test]
async fn socket_io_client_without_a_session_is_refused_and_with_one_is_admitted() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    env.add_session("good-token", "alice", chrono::Duration::hours(1)).await;
    let mut driver = Driver::start().await;
    for transport in ["websocket", "polling"] {
        let refused = driver.connect("anon", &edge.url(), json!({ "transports": [transport] })).await;
        assert_eq!(refused, Err("unauthorized".to_owned()), "{transport}");
        let admitted = driver
            .connect(
                "alice",
                &edge.url(),
                json!({ "transports": [transport], "auth": { "token": "good-token" } }),
            )
            .await;
        assert!(admitted.is_ok(), "{transport}: {admitted:?}");
        let session = driver.event("alice", "session").await;
        assert_eq!(session["userId"], "alice");
        assert!(session["serverTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{session}");
        driver.disconnect("alice").await;
    }
}

/// The JSON log lines of a process, parsed (anything else it printed is left out).
fn json_lines(process: &Running) -> Vec<serde_json::Value> {
    process.logs().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Issue 17: a start and a stop log no warning or error, no PostgreSQL notice, one line about
/// the shards a messages worker took, and a stop line that names the binary.
#[tokio::test]
async fn every_binary_starts_and_stops_quietly_and_says_which_it_is() {
    let env = TestEnv::new().await;
    for bin in Bin::ALL {
        // An edge that lets any origin in warns about it, on purpose; a listed origin does not.
        let mut process = env.spawn_ready(bin, &[("ALLOWED_ORIGINS", "http://localhost:5173")]).await;
        if bin == Bin::Messages {
            switchboard_tests::eventually(
                "the worker to own every shard",
                Duration::from_secs(10),
                || async {
                    let (_, metrics) = process.get("/metrics").await;
                    metrics.lines().any(|l| l == "messages_shards_owned 16").then_some(())
                },
            )
            .await;
        }
        process.signal(Signal::SIGTERM);
        assert_eq!(process.wait_exit(Duration::from_secs(10)).await.code(), Some(0), "{}", bin.name());
        let what = format!("{} to log its stop", bin.name());
        let stopped = switchboard_tests::eventually(&what, Duration::from_secs(2), || {
            let line = json_lines(&process).into_iter().find(|l| l["message"] == "stopped");
            async move { line }
        })
        .await;
        assert_eq!(stopped["binary"], bin.name(), "{stopped}");
        let lines = json_lines(&process);
        let requested: Vec<_> = lines.iter().filter(|l| l["message"] == "shutdown requested").collect();
        assert_eq!(requested.len(), 1, "{}: {requested:?}", bin.name());
        assert_eq!(requested[0]["binary"], bin.name());
        let loud: Vec<_> = lines.iter().filter(|l| l["level"] == "WARN" || l["level"] == "ERROR").collect();
        assert!(loud.is_empty(), "{} logged: {loud:#?}", bin.name());
        let notices: Vec<_> = process.logs().into_iter().filter(|l| l.contains("already exists")).collect();
        assert!(notices.is_empty(), "{} logged: {notices:#?}", bin.name());
        let shard_lines: Vec<_> =
            lines.iter().filter_map(|l| l["message"].as_str()).filter(|m| m.contains("shard")).collect();
        if bin == Bin::Messages {
            assert_eq!(shard_lines, ["took 16 shards, gave back 0"], "one line for the whole start");
            let took =
                lines.iter().find(|l| l["message"] == "took 16 shards, gave back 0").expect("the line");
            assert_eq!(
                (took["took"].as_str(), took["owned"].as_u64(), took["copies"].as_u64()),
                (Some("0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15"), Some(16), Some(1))
            );
        } else {
            assert!(shard_lines.is_empty(), "{}: {shard_lines:?}", bin.name());
        }
    }
}

/// Issue 17: credentials the database refuses are one ERROR that names `DATABASE_URL` (not
/// its value) and says what to fix; the process keeps trying without repeating it every time.
#[tokio::test]
async fn refused_database_credentials_are_one_clear_error_not_a_retry_loop_of_warnings() {
    let env = TestEnv::new().await;
    // A role that does not exist (what the old default gave, as "anonymous"): refused whatever
    // pg_hba.conf says (a development server may trust every local connection's password).
    let url = env.database_url.replacen("switchboard:switchboard@", "no_such_role:not-the-password@", 1);
    assert_ne!(url, env.database_url, "the test database URL carries the development credentials");
    let worker = env.spawn(Bin::Messages, &[("DATABASE_URL", url.as_str())]).await;
    let error = switchboard_tests::eventually("the credentials error", Duration::from_secs(10), || {
        let line = json_lines(&worker).into_iter().find(|l| l["level"] == "ERROR");
        async move { line }
    })
    .await;
    let message = error["message"].as_str().expect("a message");
    assert!(message.starts_with("the database refused the credentials in DATABASE_URL; "), "{error}");
    assert!(message.contains("deploy/services.sh"), "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("role \"no_such_role\" does not exist")),
        "{error}"
    );
    // Attempts go on about every second (backoff tops out at 1 s); the error is not repeated
    // within 30 s, and there is no warning per attempt either.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lines = json_lines(&worker);
    let loud: Vec<_> = lines.iter().filter(|l| l["level"] == "WARN" || l["level"] == "ERROR").collect();
    assert_eq!(loud.len(), 1, "{loud:#?}");
    assert!(!worker.logs().join("\n").contains("not-the-password"), "the password is never logged");
    assert_eq!(worker.get("/readyz").await.0, 503);
}

#[tokio::test]
async fn a_bad_number_says_what_it_must_be() {
    let env = TestEnv::new().await;
    for (bin, variable, value, reason) in [
        (Bin::Edge, "WEBSOCKET_PORT", "70000", "must be a port number from 0 to 65535"),
        (Bin::Presence, "METRICS_PORT", "-1", "must be a port number from 0 to 65535"),
        (Bin::Messages, "ACK_TIMEOUT_MS", "soon", "must be a whole number from 0 to 18446744073709551615"),
    ] {
        let mut vars = env.base_env();
        vars.push((variable.to_owned(), value.to_owned()));
        let (status, output) = Running::run_to_exit(bin, &vars, Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(64));
        assert_eq!(output, [format!("{}: invalid configuration: {variable}: {reason}", bin.name())]);
    }
}
