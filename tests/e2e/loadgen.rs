//! `switchboard-loadgen` against the real system, briefly: its own Socket.IO client, its
//! correctness counters and its figures stay honest between benchmark runs.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use switchboard_tests::{Bin, INGRESS_KEY, Running, TestEnv, eventually};

const SECRET: &str = "loadgen-test-secret-loadgen-test";

/// The edge settings the load generator needs: JWT auth and no per-socket rate limit.
const EDGE: [(&str, &str); 4] = [
    ("AUTH_MODE", "jwt"),
    ("AUTH_JWT_SECRET", SECRET),
    ("RATE_LIMIT_PER_SEC", "100000"),
    ("RATE_LIMIT_BURST", "100000"),
];

/// Runs the load generator with `args` plus the edges and credentials; returns its JSON.
async fn loadgen(edges: &[&Running], args: &[&str]) -> Value {
    let path = Bin::Edge.path().with_file_name("switchboard-loadgen");
    let edges: Vec<String> = edges.iter().map(|e| e.addr.to_string()).collect();
    let output = tokio::process::Command::new(path)
        .args(args)
        .args(["--edges", &edges.join(","), "--jwt-secret", SECRET, "--ingress-key", INGRESS_KEY])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("switchboard-loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with the test's output when it fails.
    eprintln!("switchboard-loadgen said:\n{stderr}");
    assert!(output.status.success(), "switchboard-loadgen failed");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("its output is JSON ({e}); stderr: {stderr}"))
}

#[tokio::test]
async fn a_short_chat_run_stores_every_acked_message_and_delivers_each_once_in_order() {
    let env = TestEnv::new().await;
    let edge_a = env.spawn_ready(Bin::Edge, &EDGE).await;
    let edge_b = env.spawn_ready(Bin::Edge, &EDGE).await;
    let _messages = env.spawn_ready(Bin::Messages, &[]).await;

    let report = loadgen(
        &[&edge_a, &edge_b],
        &["chat", "--conversations", "10", "--window", "4", "--duration", "2", "--warmup", "0.5"],
    )
    .await;

    let run = &report["runs"][0];
    let acked = run["acked"].as_u64().expect("acked");
    assert!(acked > 0, "nothing was acknowledged: {run}");
    assert_eq!(run["sent"].as_u64(), Some(acked), "every send is acknowledged: {run}");
    assert_eq!(run["errors"], serde_json::json!({}), "{run}");
    for counter in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(run[counter].as_u64(), Some(0), "{counter}: {run}");
    }
    assert!(run["latency"]["samples"].as_u64() > Some(0), "latency was measured: {run}");
    assert!(run["sends_acked_per_s"].as_f64() > Some(0.0), "{run}");
    // What the load generator counted is what the database holds.
    assert_eq!(env.count("SELECT count(*) FROM messages").await, acked as i64);
    assert_eq!(env.count("SELECT count(*) FROM conversations").await, 10);
}

#[tokio::test]
async fn presence_churn_ends_with_exactly_the_expected_users_online() {
    let env = TestEnv::new().await;
    let fast = [("PRESENCE_REPORT_INTERVAL_MS", "300"), ("PRESENCE_OFFLINE_GRACE_MS", "300")];
    let mut edge_env = EDGE.to_vec();
    edge_env.extend(fast);
    let edge_a = env.spawn_ready(Bin::Edge, &edge_env).await;
    let edge_b = env.spawn_ready(Bin::Edge, &edge_env).await;
    let _messages = env.spawn_ready(Bin::Messages, &[]).await;
    let presence = env.spawn_ready(Bin::Presence, &fast).await;
    // The presence worker records for two report intervals before it announces anything.
    eventually("the presence worker to warm up", Duration::from_secs(15), || async {
        presence.get("/metrics").await.1.lines().any(|l| l == "presence_warm 1").then_some(())
    })
    .await;

    // Churn long and fast enough that anything slower than the changes falls behind: an edge
    // publishing its changes one by one, or presence announcing them one by one, ended here with
    // some users' last event wrong (their state right), and so did a stale change applied after
    // a report.
    let report = loadgen(
        &[&edge_a, &edge_b],
        &["presence", "--users", "200", "--concurrency", "32", "--duration", "8", "--settle", "2"],
    )
    .await;

    assert!(report["connects"].as_u64() > Some(20), "users came and went: {report}");
    assert_eq!(report["connect_errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["query_mismatches"].as_u64(), Some(0), "{report}");
    assert_eq!(report["event_mismatches"].as_u64(), Some(0), "{report}");
}
