//! Overload (issue 14): a shard that is behind refuses new chat commands at once instead of
//! queueing them until they expire.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, TestEnv, eventually};

/// The value of a counter without labels in a Prometheus text page, 0 when absent.
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_shard_that_is_behind_answers_unavailable_at_once_and_stores_nothing_refused() {
    let env = TestEnv::new().await;
    let _worker = env.spawn_ready(Bin::Messages, &[]).await;
    let edge = env.spawn_ready(Bin::Edge, &[("CHAT_INFLIGHT_PER_SHARD", "2")]).await;
    env.add_session("alice-token", "alice", chrono::Duration::hours(1)).await;
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": "alice-token" } });
    driver.connect("a", &edge.url(), options).await.expect("alice connects");

    // Hold the conversation's row: the worker's transaction waits on it, so the shard is
    // behind and the first two sends keep their places.
    let db = env.db().await;
    let mut holder = db.begin().await.expect("a transaction");
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1::uuid FOR UPDATE")
        .bind(&conversation)
        .execute(&mut *holder)
        .await
        .expect("lock the conversation");

    let sends: Vec<Value> =
        (1..=5).map(|i| json!({ "conversationId": conversation, "content": format!("m{i}") })).collect();
    let release = async {
        // The three sends past the two places are refused while the worker is still stuck,
        // that is before any answer could free a place.
        eventually("three sends refused", Duration::from_secs(5), || async {
            let (_, metrics) = edge.get("/metrics").await;
            (counter(&metrics, "edge_chat_refused_total{reason=\"overloaded\"}") >= 3.0).then_some(())
        })
        .await;
        holder.commit().await.expect("release the conversation");
    };
    let (replies, ()) = tokio::join!(driver.emit_ack_many("a", "message:send", sends), release);
    let outcomes: Vec<Value> = replies
        .iter()
        .map(|r| if r["success"] == true { r["seq"].clone() } else { r["error"]["code"].clone() })
        .collect();
    assert_eq!(
        outcomes,
        [json!(1), json!(2), json!("unavailable"), json!("unavailable"), json!("unavailable")]
    );
    assert_eq!(env.count("SELECT count(*) FROM messages").await, 2, "refused sends store nothing");

    // Once the shard caught up, sends are admitted again.
    let again = driver
        .emit_ack("a", "message:send", json!({ "conversationId": conversation, "content": "m6" }))
        .await;
    assert_eq!(again["seq"], 3, "{again}");
}
