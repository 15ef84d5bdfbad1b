//! Overload (issue 14): a shard that is behind refuses new chat commands at once instead of
//! queueing them until they expire.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, Running, TestEnv, eventually};

/// The value of a counter without labels in a Prometheus text page, 0 when absent.
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Locks a conversation's row until the returned transaction ends: the messages worker's
/// transaction for that conversation waits on it, so its shard falls behind.
async fn hold(env: &TestEnv, conversation: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = env.db().await.begin().await.expect("a transaction");
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1::uuid FOR UPDATE")
        .bind(conversation)
        .execute(&mut *holder)
        .await
        .expect("lock the conversation");
    holder
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
    let holder = hold(&env, &conversation).await;

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

/// Waits until the edge published `commands` chat commands (in as many messages as its
/// batching made of them) and every one of those messages is out to the worker, unacknowledged.
async fn out_to_the_worker(env: &TestEnv, edge: &Running, queue: &str, commands: u64) {
    let messages = eventually(&format!("{commands} commands published"), Duration::from_secs(10), || async {
        let metrics = edge.get("/metrics").await.1;
        let published = counter(&metrics, "bus_request_batch_size_sum") as u64;
        (published >= commands).then(|| counter(&metrics, "bus_request_batch_size_count") as u64)
    })
    .await;
    eventually(&format!("{messages} messages of {queue} out"), Duration::from_secs(10), || async {
        let queues = env.rabbit.queues(&env.vhost).await;
        let out = queues.iter().find(|q| q["name"] == queue)?["messages_unacknowledged"].as_u64()?;
        (out >= messages).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_batch_mixing_refusals_retries_and_conversations_answers_each_command() {
    use switchboard::{bus::Shard, contract::ConversationId};
    let env = TestEnv::new().await;
    let _worker = env.spawn_ready(Bin::Messages, &[]).await;
    // The broker's queue statistics, which tell when the commands are out to the worker, are
    // refreshed every few seconds: the held send must outlast that.
    let edge = env.spawn_ready(Bin::Edge, &[("ACK_TIMEOUT_MS", "30000")]).await;
    for user in ["alice", "bob", "carol"] {
        env.add_session(&format!("{user}-token"), user, chrono::Duration::hours(1)).await;
    }
    // Two conversations of alice's on the same shard, so their commands share a batch.
    let first = env.create_conversation(&edge, &["alice", "bob"]).await;
    let shard = Shard::of(first.parse::<ConversationId>().expect("an id"));
    let mut second = None;
    for _ in 0..200 {
        let other = env.create_conversation(&edge, &["alice", "carol"]).await;
        if Shard::of(other.parse::<ConversationId>().expect("an id")) == shard {
            second = Some(other);
            break;
        }
    }
    let second = second.expect("a conversation on the same shard in 200 tries");
    let mut driver = Driver::start().await;
    for (client, user) in [("a", "alice"), ("b", "bob"), ("c", "carol")] {
        let options = json!({ "transports": ["websocket"], "auth": { "token": format!("{user}-token") } });
        driver.connect(client, &edge.url(), options).await.expect("connects");
    }

    // The worker takes the first send and waits on the held row; everything after it gathers
    // in the shard's prefetch and comes as one batch once the row is free.
    let holder = hold(&env, &first).await;
    let send = |conversation: &str, content: &str, id: Option<&str>| {
        let mut send = json!({ "conversationId": conversation, "content": content });
        if let Some(id) = id {
            send["clientMessageId"] = json!(id);
        }
        send
    };
    let queue = shard.key();
    let one = driver.emit_later("a", "message:send", send(&first, "one", None)).await;
    out_to_the_worker(&env, &edge, &queue, 1).await;
    let gathered = [
        ("a", send(&second, "to carol", Some("x"))),
        ("c", send(&first, "not a participant", None)),
        ("a", send(&first, "two", Some("dup"))),
        ("a", send(&first, "two", Some("dup"))),
        ("b", send(&first, "three", Some("x"))),
    ];
    let mut reqs = Vec::new();
    for (client, payload) in gathered {
        reqs.push((client, driver.emit_later(client, "message:send", payload).await));
    }
    out_to_the_worker(&env, &edge, &queue, 6).await;
    holder.commit().await.expect("release the conversation");

    let reply = driver.ack("a", one).await;
    assert_eq!((reply["success"].clone(), reply["seq"].clone()), (json!(true), json!(1)), "{reply}");
    let mut replies = Vec::new();
    for (client, req) in reqs {
        replies.push(driver.ack(client, req).await);
    }
    let outcome =
        |r: &Value| if r["success"] == true { r["seq"].clone() } else { r["error"]["code"].clone() };
    let outcomes: Vec<Value> = replies.iter().map(outcome).collect();
    // carol's conversation has its own seq; the repeated id is one message; bob's "x" is his
    // own id, not alice's. Alice's and bob's sends come from two sockets, whose commands have
    // no order between them: "two" and "three" take seq 2 and 3 in either order.
    assert_eq!(outcomes[..2], [json!(1), json!("forbidden")], "{outcomes:?}");
    assert_eq!(
        (outcomes[3].clone(), replies[3]["messageId"].clone()),
        (outcomes[2].clone(), replies[2]["messageId"].clone())
    );
    let mut last_two = [outcomes[2].as_i64(), outcomes[4].as_i64()];
    last_two.sort();
    assert_eq!(last_two, [Some(2), Some(3)], "{outcomes:?}");
    assert_eq!(env.count("SELECT count(*) FROM messages").await, 4);
    let seen: Vec<Value> = driver
        .events_until_quiet("b", "message:new", Duration::from_millis(300))
        .await
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(seen, [json!("one"), json!("two")], "bob sees alice's messages once, in order, not his own");
    let seen = driver.events_until_quiet("c", "message:new", Duration::from_millis(100)).await;
    assert_eq!(seen.len(), 1, "carol gets her conversation's message only: {seen:?}");
}

#[tokio::test]
async fn a_chat_message_costs_the_worker_one_publish_its_fan_out_which_carries_the_ack() {
    let env = TestEnv::new().await;
    let worker = env.spawn_ready(Bin::Messages, &[]).await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    for user in ["alice", "bob"] {
        env.add_session(&format!("{user}-token"), user, chrono::Duration::hours(1)).await;
    }
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    for (client, user) in [("a", "alice"), ("b", "bob")] {
        let options = json!({ "transports": ["websocket"], "auth": { "token": format!("{user}-token") } });
        driver.connect(client, &edge.url(), options).await.expect("connects");
    }
    // The worker counts a publish once lapin has handed it over, which can be after the
    // message already reached the client: wait for a count to arrive, never read it once.
    let published = |metrics: &str, exchange: &str| {
        counter(metrics, &format!("bus_published_total{{exchange=\"{exchange}\"}}"))
    };
    let published_once_more = |exchange: &'static str, from: f64| {
        let worker = &worker;
        async move {
            eventually(&format!("one more publish to {exchange:?}"), Duration::from_secs(5), || async {
                let metrics = worker.get("/metrics").await.1;
                (published(&metrics, exchange) > from).then_some(metrics)
            })
            .await
        }
    };
    let before = worker.get("/metrics").await.1;
    let send = json!({ "conversationId": conversation, "content": "hi", "clientMessageId": "c1" });
    let ack = driver.emit_ack("a", "message:send", send.clone()).await;
    assert_eq!((ack["success"].clone(), ack["seq"].clone()), (json!(true), json!(1)), "{ack}");
    assert_eq!(driver.event("b", "message:new").await["content"], "hi");
    let after = published_once_more("user.direct", published(&before, "user.direct")).await;
    assert_eq!(published(&after, "user.direct") - published(&before, "user.direct"), 1.0, "{after}");

    // A retry of a stored message is not fanned out again: its ack goes as a reply.
    let again = driver.emit_ack("a", "message:send", send).await;
    assert_eq!(again, ack);
    let last = published_once_more("", published(&after, "")).await;
    assert_eq!(published(&last, "user.direct"), published(&after, "user.direct"), "{last}");
    // One reply in all since `before`: the first message's ack came inside its fan-out.
    assert_eq!(published(&last, "") - published(&before, ""), 1.0, "{last}");
    driver.no_event("b", "message:new", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_full_bounded_queue_refuses_at_once_and_an_older_declaration_is_used_as_it_is() {
    use switchboard::bus::{
        BusError, BusMessage, Durability, QueueSpec, Route, Routed, topology::EVENTS_TOPIC,
    };
    /// A message for the test's own queues, routed by the key it carries.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Probe {
        key: String,
    }
    impl BusMessage for Probe {
        const KIND: &'static str = "test.probe";
    }
    impl Routed for Probe {
        fn route(&self) -> Route {
            Route { exchange: EVENTS_TOPIC, key: self.key.clone().into(), also: Vec::new() }
        }
    }
    let probe = |key: &str| Probe { key: key.to_owned() };
    let env = TestEnv::new().await;
    let bus = env.bus("test-bounded").await;
    let bounded = QueueSpec::durable("test.bounded").bind(EVENTS_TOPIC, "test.bounded").bounded(2);
    let channel = bus.channel().await.expect("a channel");
    bus.declare(&channel, &bounded).await.expect("declared");
    for _ in 0..2 {
        bus.publish(&probe("test.bounded"), Durability::Confirmed).await.expect("room left");
    }
    // Full: the broker says no at once (the edge answers the sender `unavailable`).
    let refused = bus.publish(&probe("test.bounded"), Durability::Confirmed).await;
    assert!(matches!(refused, Err(BusError::Nacked)), "{refused:?}");

    // A queue an earlier version declared without the bound: redeclaring it with other
    // arguments is refused by the broker, and the consumer uses it as it is.
    let old = QueueSpec::durable("test.old").bind(EVENTS_TOPIC, "test.old");
    bus.declare(&bus.channel().await.expect("a channel"), &old).await.expect("declared");
    let (_channel, mut consumer) = bus.open_consumer(&old.clone().bounded(2), 10).await.expect("consumes");
    bus.publish(&probe("test.old"), Durability::Confirmed).await.expect("published");
    let delivery = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut consumer))
        .await
        .expect("a delivery in time");
    assert!(matches!(delivery, Some(Ok(_))), "the message arrives");
}

#[tokio::test]
async fn a_requester_that_does_not_take_acks_in_the_fan_out_gets_a_reply() {
    // What an edge of the version before sends: a plain `message.send` request without the
    // `x-switchboard-ack-in-fan-out` header. The worker must answer it with a reply.
    use switchboard::contract::{ConversationId, bus::SendMessage};
    let env = TestEnv::new().await;
    let _worker = env.spawn_ready(Bin::Messages, &[]).await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    let conversation: ConversationId =
        env.create_conversation(&edge, &["alice", "bob"]).await.parse().expect("an id");
    let bus = env.bus("test-older-edge").await;
    let command = SendMessage {
        conversation_id: conversation,
        sender_id: "alice".parse().expect("a user id"),
        sender_socket: Some("an-older-edges-socket".into()),
        content: "hi".parse().expect("content"),
        client_message_id: None,
        expires_at: chrono::Utc::now() + chrono::Duration::seconds(10),
    };
    let sent = bus.request(&command, Duration::from_secs(5)).await.expect("answered");
    assert_eq!(sent.seq, 1);
}
