//! Domain events for backends (issue 18; `switchboard::contract::domain`): a backend binds a
//! queue of its own to `events.topic` and gets one event per fact, with the ids, `seq` and
//! times the clients saw; with nobody bound, the workers publish almost nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, Listener, Running, TestEnv, as_user, eventually};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

/// A backend's own queue on `events.topic`: what it receives, as `(routing key, envelope kind,
/// data)`.
struct Backend {
    listener: Listener,
}

impl Backend {
    async fn bind(env: &TestEnv, key: &str) -> Backend {
        Backend { listener: env.listen(key).await }
    }

    async fn recv(&mut self, timeout: Duration) -> Option<(String, String, Value)> {
        let (key, envelope) = self.listener.next_within(timeout).await?;
        Some((key, envelope["kind"].as_str().unwrap_or_default().to_owned(), envelope["data"].clone()))
    }

    /// The next event of `kind`, within 10 s; the events of other kinds before it are kept.
    async fn next(&mut self, kind: &str, others: &mut Vec<(String, String, Value)>) -> Value {
        if let Some(at) = others.iter().position(|(_, got, _)| got == kind) {
            return others.remove(at).2;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (key, got, data) = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {kind} within 10 s; got meanwhile: {others:?}"));
            assert_eq!(key, got, "an event's routing key is its kind");
            if got == kind {
                return data;
            }
            others.push((key, got, data));
        }
    }

    /// Everything that arrives until nothing has for `quiet`.
    async fn rest(&mut self, quiet: Duration) -> Vec<(String, String, Value)> {
        let mut rest = Vec::new();
        while let Some(event) = self.recv(quiet).await {
            rest.push(event);
        }
        rest
    }
}

/// The value of the counter `name` with exactly `labels` in `process`'s metrics (0 if absent).
async fn counter(process: &Running, name: &str, labels: &str) -> f64 {
    let (_, text) = process.get("/metrics").await;
    let series = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

#[tokio::test]
async fn a_backend_bound_to_domain_events_gets_each_fact_once_as_the_clients_saw_it() {
    let env = TestEnv::new().await;
    let fast = [("PRESENCE_REPORT_INTERVAL_MS", "500"), ("PRESENCE_OFFLINE_GRACE_MS", "300")];
    let (_messages, _notifier, presence) = tokio::join!(
        env.spawn_ready(Bin::Messages, &[]),
        env.spawn_ready(Bin::Notifier, &[]),
        env.spawn_ready(Bin::Presence, &fast)
    );
    let edge = env.spawn_ready(Bin::Edge, &fast).await;
    // Past its warm-up, presence judges offline at once (after the grace period).
    eventually("presence warm", Duration::from_secs(10), || async {
        presence.get("/metrics").await.1.lines().any(|l| l == "presence_warm 1").then_some(())
    })
    .await;
    env.add_session("alice-token", "alice", HOUR).await;
    env.add_session("bob-token", "bob", HOUR).await;
    let mut backend = Backend::bind(&env, "domain.#").await;
    let mut others = Vec::new();

    // A match: recorded, its conversation opened.
    let (status, reply) =
        edge.post("/api/v1/matches", json!({ "matchId": "m-1", "userIds": ["bob", "alice"] })).await;
    assert_eq!(status, 202, "{reply}");
    let conversation = reply["conversationId"].as_str().expect("conversationId").to_owned();
    let created = backend.next("domain.match.created", &mut others).await;
    assert_eq!(
        (&created["matchId"], &created["conversationId"], &created["userIds"]),
        (&json!("m-1"), &json!(conversation), &json!(["alice", "bob"]))
    );
    assert!(created["createdAt"].as_str().is_some(), "{created}");

    // Both come online; each gets the match's notification on connect, which the edge reports
    // delivered.
    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice")).await.expect("alice connects");
    driver.connect("b", &edge.url(), as_user("bob")).await.expect("bob connects");
    let mut online = Vec::new();
    for _ in 0..2 {
        online.push(backend.next("domain.user.online", &mut others).await["userId"].clone());
    }
    online.sort_by_key(|user| user.to_string());
    assert_eq!(online, [json!("alice"), json!("bob")]);
    let bobs_notification = driver.event("b", "notification:new").await;
    let alices_notification = driver.event("a", "notification:new").await;
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let event = backend.next("domain.notification.delivered", &mut others).await;
        assert!(event["deliveredAt"].as_str().is_some(), "{event}");
        delivered.push((event["notificationId"].clone(), event["userId"].clone()));
    }
    delivered.sort_by_key(|(_, user)| user.to_string());
    assert_eq!(
        delivered,
        [
            (alices_notification["id"].clone(), json!("alice")),
            (bobs_notification["id"].clone(), json!("bob"))
        ]
    );

    // Three messages: each stored event is the message:new bob got, in seq order.
    let mut last_id = Value::Null;
    for n in 1..=3 {
        let send = json!({ "conversationId": conversation, "content": format!("hello {n}") });
        let ack = driver.emit_ack("a", "message:send", send).await;
        assert_eq!((&ack["success"], &ack["seq"]), (&json!(true), &json!(n)), "{ack}");
        let seen = driver.event("b", "message:new").await;
        assert_eq!(seen["id"], ack["messageId"]);
        last_id = ack["messageId"].clone();
        assert_eq!(backend.next("domain.message.stored", &mut others).await, seen);
    }

    // A read: the message:read alice got.
    let read = driver
        .emit_ack("b", "message:read", json!({ "conversationId": conversation, "messageId": last_id }))
        .await;
    assert_eq!(read["success"], true, "{read}");
    let seen = driver.event("a", "message:read").await;
    assert_eq!(backend.next("domain.message.read", &mut others).await, seen);

    // bob reads his notification: once, however often he says so.
    for _ in 0..2 {
        let ack = driver.emit_ack("b", "notification:read", json!({ "id": bobs_notification["id"] })).await;
        assert_eq!(ack["success"], true, "{ack}");
    }
    let event = backend.next("domain.notification.read", &mut others).await;
    assert_eq!((&event["notificationId"], &event["userId"]), (&bobs_notification["id"], &json!("bob")));
    assert!(event["readAt"].as_str().is_some(), "{event}");

    // The match removed, then bob leaves.
    let delete = reqwest::Method::DELETE;
    let key = Some(switchboard_tests::INGRESS_KEY);
    assert_eq!(edge.call(delete, "/api/v1/matches/m-1", key, None).await.0, 202);
    let removed = backend.next("domain.match.removed", &mut others).await;
    assert_eq!(removed, json!({ "matchId": "m-1", "conversationId": conversation }));
    driver.disconnect("b").await;
    let offline = backend.next("domain.user.offline", &mut others).await;
    assert_eq!(offline["userId"], "bob");
    assert!(offline["lastSeenAt"].as_str().is_some(), "{offline}");

    // Nothing else: no fact twice, no event of another kind.
    others.extend(backend.rest(Duration::from_secs(1)).await);
    assert!(others.is_empty(), "events beyond one per fact: {others:#?}");
}

#[tokio::test]
async fn with_no_backend_bound_the_worker_publishes_at_most_one_probe_a_second() {
    let env = TestEnv::new().await;
    let messages = env.spawn_ready(Bin::Messages, &[]).await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    env.add_session("alice-token", "alice", HOUR).await;
    env.add_session("bob-token", "bob", HOUR).await;
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice")).await.expect("alice connects");

    let sends = 40;
    let started = Instant::now();
    for n in 0..sends {
        let send = json!({ "conversationId": conversation, "content": format!("m{n}") });
        assert_eq!(driver.emit_ack("a", "message:send", send).await["success"], true);
    }
    let seconds = started.elapsed().as_secs_f64();
    let outcome = |outcome: &'static str| {
        let labels = format!(r#"event="domain.message.stored",outcome="{outcome}""#);
        let messages = &messages;
        async move { counter(messages, "bus_domain_events_total", &labels).await }
    };
    let (probes, skipped) = eventually("every send counted", Duration::from_secs(5), || async {
        let (probes, skipped) = (outcome("returned").await, outcome("skipped").await);
        (probes + skipped == f64::from(sends)).then_some((probes, skipped))
    })
    .await;
    assert_eq!(outcome("published").await, 0.0);
    // Each send came alone (its ack awaited), so each probe is one publish the broker returned;
    // after a return the key stays unpublished for a second.
    assert!(
        probes >= 1.0 && skipped >= 1.0,
        "the first send probes, later ones are skipped: {probes}, {skipped}"
    );
    assert!(probes <= 1.0 + seconds.ceil(), "{probes} probes for {sends} sends in {seconds:.1} s");
}
