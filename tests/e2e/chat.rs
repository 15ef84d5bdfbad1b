//! Chat (issue 4): two edges, two messages workers, the official socket.io-client.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, Running, TestEnv, as_user};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

/// Two edges, two messages workers, sessions for the users, and one driver.
struct Chat {
    env: TestEnv,
    edges: Vec<Running>,
    workers: Vec<Running>,
    driver: Driver,
}

impl Chat {
    async fn start(users: &[&str], edge_env: &[(&str, &str)]) -> Chat {
        let env = TestEnv::new().await;
        let (w1, w2) = tokio::join!(env.spawn_ready(Bin::Messages, &[]), env.spawn_ready(Bin::Messages, &[]));
        let (e1, e2) =
            tokio::join!(env.spawn_ready(Bin::Edge, edge_env), env.spawn_ready(Bin::Edge, edge_env));
        for user in users {
            env.add_session(&format!("{user}-token"), user, HOUR).await;
        }
        Chat { env, edges: vec![e1, e2], workers: vec![w1, w2], driver: Driver::start().await }
    }

    async fn connect(&mut self, client: &str, user: &str, edge: usize) {
        let url = self.edges[edge].url();
        self.driver.connect(client, &url, as_user(user)).await.unwrap_or_else(|e| panic!("{client}: {e}"));
    }

    async fn conversation(&self, users: &[&str]) -> String {
        self.env.create_conversation(&self.edges[0], users).await
    }
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["success"], true, "{reply}");
    reply
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<success>")
}

#[tokio::test]
async fn two_users_on_two_edges_chat_both_ways() {
    let mut t = Chat::start(&["alice", "bob"], &[]).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a1", "alice", 0).await;
    t.connect("a2", "alice", 1).await;
    t.connect("b", "bob", 1).await;

    let send =
        json!({ "conversationId": conversation, "content": "  hello bob  ", "clientMessageId": "m-1" });
    let ack = t.driver.emit_ack("a1", "message:send", send).await;
    ok(&ack);
    assert_eq!(ack["seq"], 1);
    let message_id = ack["messageId"].as_str().expect("messageId").to_owned();
    let created_at = ack["createdAt"].as_str().expect("createdAt").to_owned();
    let expected = json!({
        "id": message_id, "conversationId": conversation, "senderId": "alice", "content": "hello bob",
        "seq": 1, "createdAt": created_at, "clientMessageId": "m-1"
    });
    assert_eq!(t.driver.event("b", "message:new").await, expected);
    assert_eq!(t.driver.event("a2", "message:new").await, expected, "the sender's other socket gets it");

    let ack = t
        .driver
        .emit_ack("b", "message:send", json!({ "conversationId": conversation, "content": "hi alice" }))
        .await;
    assert_eq!(ok(&ack)["seq"], 2);
    for client in ["a1", "a2"] {
        let message = t.driver.event(client, "message:new").await;
        assert_eq!(
            (message["seq"].clone(), message["senderId"].clone(), message["content"].clone()),
            (json!(2), json!("bob"), json!("hi alice"))
        );
        assert!(message.get("clientMessageId").is_none(), "{message}");
    }
    t.driver.no_event("a1", "message:new", Duration::from_millis(300)).await;
    t.driver.no_event("b", "message:new", Duration::from_millis(10)).await;

    // Reading: the others get message:read, the reader's socket does not.
    let ack = t
        .driver
        .emit_ack("b", "message:read", json!({ "conversationId": conversation, "messageId": message_id }))
        .await;
    assert_eq!(ack, json!({ "success": true }));
    for client in ["a1", "a2"] {
        let read = t.driver.event(client, "message:read").await;
        assert_eq!(
            (read["conversationId"].clone(), read["messageId"].clone(), read["userId"].clone()),
            (json!(conversation), json!(message_id), json!("bob"))
        );
        assert!(read["readAt"].as_str().is_some_and(|r| r.ends_with('Z')));
    }
    t.driver.no_event("b", "message:read", Duration::from_millis(200)).await;
    assert_eq!(t.env.count("SELECT count(*) FROM read_receipts WHERE user_id = 'bob' AND seq = 1").await, 1);
}

#[tokio::test]
async fn two_hundred_sends_without_waiting_keep_their_order_while_a_worker_is_killed() {
    // A burst of 100 at once from one socket is past both the rate limit and the places a
    // shard keeps for one edge (admission control, tests/e2e/overload.rs): raised, since a
    // refused send is retried after later ones and this test is about the order of accepted ones.
    let raised =
        [("RATE_LIMIT_PER_SEC", "10000"), ("RATE_LIMIT_BURST", "10000"), ("CHAT_INFLIGHT_PER_SHARD", "1000")];
    let mut t = Chat::start(&["alice", "bob"], &raised).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a", "alice", 0).await;
    t.connect("b", "bob", 1).await;
    let send = |i: usize| json!({ "conversationId": conversation, "content": format!("message {i}"), "clientMessageId": format!("c-{i}") });

    let mut acks = t.driver.emit_ack_many("a", "message:send", (0..100).map(send).collect()).await;
    // Kill one copy without a goodbye; the other takes its shards over.
    t.workers[0].signal(Signal::SIGKILL);
    acks.extend(t.driver.emit_ack_many("a", "message:send", (100..200).map(send).collect()).await);
    // A send whose outcome the client could not learn (timeout) is retried with the same
    // clientMessageId, which the contract makes safe.
    for (i, ack) in acks.iter_mut().enumerate() {
        while ack["success"] != true {
            assert!(["timeout", "unavailable"].contains(&code(ack)), "send {i}: {ack}");
            *ack = t.driver.emit_ack("a", "message:send", send(i)).await;
        }
    }
    let seqs: Vec<i64> = acks.iter().map(|a| a["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "seq follows the send order");
    let mut ids: Vec<&str> = acks.iter().map(|a| a["messageId"].as_str().expect("id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "200 distinct messages");

    // The receiver sees every message, in seq order (a redelivered fan-out may repeat one: the
    // client drops a repeated id).
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let message = t.driver.event("b", "message:new").await;
        let seq = message["seq"].as_i64().expect("seq");
        if seen.last().is_some_and(|last| seq <= *last) {
            assert!(seen.contains(&seq), "seq {seq} arrived after {:?}", seen.last());
            continue;
        }
        assert_eq!(message["content"], format!("message {}", seq - 1));
        seen.push(seq);
    }
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
    assert_eq!(t.env.count("SELECT count(*) FROM messages").await, 200, "no duplicate row");
    assert_eq!(
        t.env.count("SELECT count(DISTINCT seq) FROM messages WHERE seq BETWEEN 1 AND 200").await,
        200
    );
}

#[tokio::test]
async fn order_holds_over_many_conversations_while_workers_come_and_go_under_load() {
    // Six conversations, each sender on edge 0 and its receiver on edge 1. In every round each
    // sender emits 40 sends without waiting, and while they are in flight the set of messages
    // workers changes: a third copy joins (shards move to it), one leaves with SIGTERM (it
    // hands its shards over), one is killed (its shards are taken after a rebalance), and a
    // fresh one joins.
    let raised =
        [("RATE_LIMIT_PER_SEC", "10000"), ("RATE_LIMIT_BURST", "10000"), ("CHAT_INFLIGHT_PER_SHARD", "1000")];
    const PAIRS: usize = 6;
    const PER_ROUND: usize = 100;
    const ROUNDS: usize = 5;
    let users: Vec<String> = (0..PAIRS).flat_map(|i| [format!("s{i}"), format!("r{i}")]).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut t = Chat::start(&user_refs, &raised).await;
    let mut conversations = Vec::new();
    for i in 0..PAIRS {
        let (sender, receiver) = (format!("s{i}"), format!("r{i}"));
        conversations.push(t.conversation(&[&sender, &receiver]).await);
        t.connect(&sender, &sender, 0).await;
        t.connect(&receiver, &receiver, 1).await;
    }
    let send = |conversation: &str, n: usize| json!({ "conversationId": conversation, "content": format!("m{n}"), "clientMessageId": format!("c{n}") });
    // Per conversation, the seq of each send acknowledged at its first attempt, in send order.
    let mut first_try: Vec<Vec<i64>> = vec![Vec::new(); PAIRS];
    let mut acked: Vec<Vec<i64>> = vec![Vec::new(); PAIRS];
    for round in 0..ROUNDS {
        let mut pending = Vec::new();
        for (i, conversation) in conversations.iter().enumerate() {
            for k in 0..PER_ROUND {
                let n = round * PER_ROUND + k;
                pending.push((
                    i,
                    n,
                    t.driver.emit_later(&format!("s{i}"), "message:send", send(conversation, n)).await,
                ));
            }
        }
        match round {
            0 => t.workers.push(t.env.spawn_ready(Bin::Messages, &[]).await),
            1 => {
                let mut leaving = t.workers.remove(0);
                leaving.signal(Signal::SIGTERM);
                assert!(leaving.wait_exit(Duration::from_secs(10)).await.success(), "a clean exit");
            }
            2 => t.workers.remove(0).signal(Signal::SIGKILL),
            3 => t.workers.push(t.env.spawn_ready(Bin::Messages, &[]).await),
            _ => {}
        }
        let mut retry = Vec::new();
        for (i, n, req) in pending {
            let reply = t.driver.ack(&format!("s{i}"), req).await;
            if reply["success"] == true {
                let seq = reply["seq"].as_i64().expect("seq");
                first_try[i].push(seq);
                acked[i].push(seq);
            } else {
                assert!(["timeout", "unavailable"].contains(&code(&reply)), "send {n} of s{i}: {reply}");
                retry.push((i, n));
            }
        }
        // A send whose outcome the client could not learn is retried with the same
        // clientMessageId, which the contract makes safe.
        for (i, n) in retry {
            loop {
                let reply =
                    t.driver.emit_ack(&format!("s{i}"), "message:send", send(&conversations[i], n)).await;
                if reply["success"] == true {
                    acked[i].push(reply["seq"].as_i64().expect("seq"));
                    break;
                }
                assert!(["timeout", "unavailable"].contains(&code(&reply)), "retry of {n} of s{i}: {reply}");
            }
        }
    }
    let total = (PER_ROUND * ROUNDS) as i64;
    for i in 0..PAIRS {
        assert!(
            first_try[i].is_sorted_by(|a, b| a < b),
            "conversation {i}: seq follows the send order: {:?}",
            first_try[i]
        );
        let mut all = acked[i].clone();
        all.sort();
        assert_eq!(all, (1..=total).collect::<Vec<_>>(), "conversation {i}: one gapless seq per send");
        // The receiver sees every message in seq order; a fan-out redelivered after a kill may
        // repeat one, which the client drops by its id.
        let receiver = format!("r{i}");
        let mut seen: Vec<i64> = Vec::new();
        while seen.len() < total as usize {
            let message = t.driver.event(&receiver, "message:new").await;
            let seq = message["seq"].as_i64().expect("seq");
            if seen.last().is_some_and(|last| seq <= *last) {
                assert!(seen.contains(&seq), "conversation {i}: seq {seq} arrived after {:?}", seen.last());
                continue;
            }
            assert_eq!(seq, seen.len() as i64 + 1, "conversation {i}: no message skipped");
            seen.push(seq);
        }
    }
    assert_eq!(t.env.count("SELECT count(*) FROM messages").await, total * PAIRS as i64, "no duplicate row");
}

#[tokio::test]
async fn a_repeated_client_message_id_returns_the_original_and_stores_one_row() {
    let mut t = Chat::start(&["alice", "bob"], &[]).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a", "alice", 0).await;
    let send = json!({ "conversationId": conversation, "content": "once", "clientMessageId": "same" });
    let first = t.driver.emit_ack("a", "message:send", send.clone()).await;
    let again = t.driver.emit_ack("a", "message:send", send.clone()).await;
    assert_eq!(ok(&first), &again);
    // Both at once, too.
    let both = t.driver.emit_ack_many("a", "message:send", vec![send.clone(), send]).await;
    assert_eq!(both[0], first);
    assert_eq!(both[1], first);
    assert_eq!(t.env.count("SELECT count(*) FROM messages").await, 1);
}

#[tokio::test]
async fn non_members_are_forbidden_and_bad_payloads_invalid() {
    let mut t = Chat::start(&["alice", "bob", "mallory"], &[]).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a", "alice", 0).await;
    t.connect("m", "mallory", 1).await;
    let ack = t
        .driver
        .emit_ack("a", "message:send", json!({ "conversationId": conversation, "content": "secret" }))
        .await;
    let message_id = ok(&ack)["messageId"].clone();
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [conversation.as_str(), unknown.as_str()] {
        for (event, payload) in [
            ("message:send", json!({ "conversationId": id, "content": "hi" })),
            ("message:read", json!({ "conversationId": id, "messageId": message_id })),
            ("conversation:join", json!({ "conversationId": id })),
            ("typing:start", json!({ "conversationId": id })),
            ("typing:stop", json!({ "conversationId": id })),
            ("messages:sync", json!({ "conversationId": id, "afterSeq": 0 })),
        ] {
            let reply = t.driver.emit_ack("m", event, payload).await;
            assert_eq!(
                reply,
                json!({ "success": false, "error": { "code": "forbidden", "message": "not allowed" } }),
                "{event} on {id}"
            );
        }
    }
    for (event, payload) in [
        ("message:send", json!({ "conversationId": conversation, "content": "   " })),
        ("message:send", json!({ "conversationId": conversation, "content": "x".repeat(4001) })),
        ("message:send", json!({ "conversationId": "42", "content": "hi" })),
        ("message:send", json!({ "conversationId": conversation })),
        ("message:read", json!({ "conversationId": conversation, "messageId": "nope" })),
        ("messages:sync", json!({ "conversationId": conversation, "afterSeq": -1 })),
        ("messages:sync", json!({ "conversationId": conversation })),
    ] {
        let reply = t.driver.emit_ack("a", event, payload.clone()).await;
        assert_eq!(code(&reply), "invalid", "{event} {payload}: {reply}");
    }
    assert_eq!(
        t.env.count("SELECT count(*) FROM messages").await,
        1,
        "nothing but the first message was stored"
    );
}

#[tokio::test]
async fn messages_sync_returns_exactly_what_an_offline_receiver_missed() {
    let mut t = Chat::start(&["alice", "bob"], &[]).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a", "alice", 0).await;
    for i in 1..=5 {
        let ack = t
            .driver
            .emit_ack(
                "a",
                "message:send",
                json!({ "conversationId": conversation, "content": format!("m{i}") }),
            )
            .await;
        assert_eq!(ok(&ack)["seq"], i);
    }
    t.connect("b", "bob", 1).await;
    let page = t
        .driver
        .emit_ack("b", "messages:sync", json!({ "conversationId": conversation, "afterSeq": 0 }))
        .await;
    let contents: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!((ok(&page)["hasMore"].clone(), contents), (json!(false), vec!["m1", "m2", "m3", "m4", "m5"]));
    let page = t
        .driver
        .emit_ack("b", "messages:sync", json!({ "conversationId": conversation, "afterSeq": 1, "limit": 2 }))
        .await;
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!((page["hasMore"].clone(), seqs), (json!(true), vec![2, 3]));
    let page = t
        .driver
        .emit_ack("b", "messages:sync", json!({ "conversationId": conversation, "afterSeq": 3, "limit": 2 }))
        .await;
    assert_eq!(page["hasMore"], false, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
    let page = t
        .driver
        .emit_ack("b", "messages:sync", json!({ "conversationId": conversation, "afterSeq": 5 }))
        .await;
    assert_eq!(page, json!({ "success": true, "messages": [], "hasMore": false }));
}

#[tokio::test]
async fn with_no_worker_sends_time_out_and_are_not_stored_later() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_ready(Bin::Messages, &[]).await;
    let edge = env.spawn_ready(Bin::Edge, &[("ACK_TIMEOUT_MS", "1500")]).await;
    env.add_session("alice-token", "alice", HOUR).await;
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    drop(worker);

    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice")).await.expect("connects");
    let started = std::time::Instant::now();
    let reply = driver
        .emit_ack(
            "a",
            "message:send",
            json!({ "conversationId": conversation, "content": "lost?", "clientMessageId": "late" }),
        )
        .await;
    assert_eq!(code(&reply), "timeout", "{reply}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(3000),
        "answered after {waited:?}"
    );

    // A worker comes back: the expired command is not carried out, new sends work, and the
    // retry of the timed-out send is safe.
    let _worker = env.spawn_ready(Bin::Messages, &[]).await;
    let reply = driver
        .emit_ack("a", "message:send", json!({ "conversationId": conversation, "content": "fresh" }))
        .await;
    assert_eq!(ok(&reply)["seq"], 1, "the expired send was never stored");
    let retry = driver
        .emit_ack(
            "a",
            "message:send",
            json!({ "conversationId": conversation, "content": "lost?", "clientMessageId": "late" }),
        )
        .await;
    assert_eq!(ok(&retry)["seq"], 2);
    assert_eq!(env.count("SELECT count(*) FROM messages").await, 2);
}

#[tokio::test]
async fn typing_reaches_the_other_joined_sockets_and_expires() {
    let mut t = Chat::start(&["alice", "bob"], &[]).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a", "alice", 0).await;
    t.connect("b", "bob", 1).await;
    t.connect("b-away", "bob", 1).await;
    for client in ["a", "b"] {
        ok(&t.driver.emit_ack(client, "conversation:join", json!({ "conversationId": conversation })).await);
    }
    let room = json!({ "conversationId": conversation });
    ok(&t.driver.emit_ack("a", "typing:start", room.clone()).await);
    assert_eq!(
        t.driver.event("b", "typing:start").await,
        json!({ "conversationId": conversation, "userId": "alice" })
    );
    ok(&t.driver.emit_ack("a", "typing:stop", room.clone()).await);
    assert_eq!(
        t.driver.event("b", "typing:stop").await,
        json!({ "conversationId": conversation, "userId": "alice" })
    );
    // A start with no stop expires after 6 s.
    ok(&t.driver.emit_ack("a", "typing:start", room.clone()).await);
    t.driver.event("b", "typing:start").await;
    let started = std::time::Instant::now();
    t.driver.no_event("b", "typing:stop", Duration::from_millis(5000)).await;
    t.driver.event("b", "typing:stop").await;
    assert!(started.elapsed() < Duration::from_millis(7500), "{:?}", started.elapsed());
    // Neither the typist nor a socket that did not join hears any of it.
    t.driver.no_event("a", "typing:start", Duration::from_millis(10)).await;
    t.driver.no_event("b-away", "typing:start", Duration::from_millis(10)).await;
    t.driver.no_event("b-away", "typing:stop", Duration::from_millis(10)).await;
}

#[tokio::test]
async fn the_conversations_ingress_validates_and_creates() {
    let t = Chat::start(&[], &[]).await;
    let edge = &t.edges[1];
    let (status, body) = edge.post("/api/v1/conversations", json!({ "participants": ["a", "b", "c"] })).await;
    assert_eq!(status, 201, "{body}");
    let id = body["conversationId"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(
        t.env
            .count(&format!("SELECT count(*) FROM conversation_participants WHERE conversation_id = '{id}'"))
            .await,
        3
    );
    let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    for bad in [
        json!({ "participants": ["a"] }),
        json!({ "participants": ["a", "a"] }),
        json!({ "participants": too_many }),
        json!({ "participants": ["a", "b c"] }),
        json!({}),
    ] {
        let (status, body) = edge.post("/api/v1/conversations", bad.clone()).await;
        assert_eq!((status, body["error"]["code"].clone()), (400, json!("invalid")), "{bad}");
    }
}

#[tokio::test]
async fn a_closed_conversation_takes_every_socket_out_of_its_room_on_every_edge() {
    let mut t = Chat::start(&["alice", "bob"], &[]).await;
    let conversation = t.conversation(&["alice", "bob"]).await;
    t.connect("a", "alice", 0).await;
    t.connect("b", "bob", 1).await;
    for client in ["a", "b"] {
        ok(&t.driver.emit_ack(client, "conversation:join", json!({ "conversationId": conversation })).await);
    }
    // What the unmatch will publish (issue 6): every edge hears it at once.
    let bus = t.env.bus("test-unmatch").await;
    let closed = switchboard::contract::bus::ConversationClosed {
        conversation_id: conversation.parse().expect("uuid"),
        participants: vec!["alice".parse().expect("id"), "bob".parse().expect("id")],
    };
    bus.publish(&closed, switchboard::bus::Durability::Confirmed).await.expect("published");
    let room = json!({ "conversationId": conversation });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    for client in ["a", "b"] {
        // Typing needs the room: once the socket is out of it, typing is forbidden.
        loop {
            let reply = t.driver.emit_ack(client, "typing:start", room.clone()).await;
            if code(&reply) == "forbidden" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{client} still in the room after 1 s");
        }
    }
    let key = format!("room.conversation.{conversation}");
    switchboard_tests::eventually("every edge to unbind the room", Duration::from_secs(1), || async {
        let bindings = t.env.rabbit.bindings(&t.env.vhost).await;
        (!bindings.iter().any(|b| b["routing_key"] == key.as_str())).then_some(())
    })
    .await;
    bus.close().await;
}

#[tokio::test]
async fn chat_works_end_to_end_with_quorum_queues() {
    let env = TestEnv::new().await;
    let quorum = [("RABBITMQ_QUEUE_TYPE", "quorum")];
    let _messages = env.spawn_ready(Bin::Messages, &quorum).await;
    let _notifier = env.spawn_ready(Bin::Notifier, &quorum).await;
    let (e1, e2) = tokio::join!(env.spawn_ready(Bin::Edge, &quorum), env.spawn_ready(Bin::Edge, &quorum));
    for user in ["alice", "bob"] {
        env.add_session(&format!("{user}-token"), user, HOUR).await;
    }
    let conversation = env.create_conversation(&e1, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    driver.connect("a", &e1.url(), as_user("alice")).await.expect("connects");
    driver.connect("b", &e2.url(), as_user("bob")).await.expect("connects");
    for i in 1..=3 {
        let ack = driver
            .emit_ack(
                "a",
                "message:send",
                json!({ "conversationId": conversation, "content": format!("q{i}") }),
            )
            .await;
        assert_eq!(ok(&ack)["seq"], i);
        assert_eq!(driver.event("b", "message:new").await["content"], format!("q{i}"));
    }
    let ack = driver
        .emit_ack("b", "message:send", json!({ "conversationId": conversation, "content": "back" }))
        .await;
    assert_eq!(ok(&ack)["seq"], 4);
    assert_eq!(driver.event("a", "message:new").await["content"], "back");

    let queues = env.rabbit.queues(&env.vhost).await;
    let kind = |name: &str| queues.iter().find(|q| q["name"] == name).map(|q| q["type"].clone());
    let shard = switchboard::bus::Shard::of(conversation.parse().expect("uuid")).key();
    for name in [shard.as_str(), "notifier.matches", "notifier.notifications", "messages.create"] {
        assert_eq!(kind(name), Some(json!("quorum")), "{name} in {queues:?}");
    }
    let edge_queues: Vec<_> =
        queues.iter().filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with("edge."))).collect();
    assert_eq!(edge_queues.len(), 2, "{queues:?}");
    assert!(
        edge_queues.iter().all(|q| q["type"] == "classic"),
        "exclusive queues stay classic: {edge_queues:?}"
    );
}

#[tokio::test]
async fn a_command_stored_again_by_its_own_id_is_fanned_out_again() {
    // What a worker meets after a commit whose answer was lost (a database failover): it
    // stores the same commands again and finds them stored by their own id. Its first attempt
    // fanned nothing out, so the recipients must get the message now. Here the same command
    // comes twice, not as a broker redelivery: the first while bob has no socket.
    use switchboard::{
        bus::{Shard, topology::EVENTS_TOPIC},
        contract::ConversationId,
    };
    let env = TestEnv::new().await;
    let _worker = env.spawn_ready(Bin::Messages, &[]).await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    env.add_session("bob-token", "bob", HOUR).await;
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    let shard = Shard::of(conversation.parse::<ConversationId>().expect("an id")).key();
    let command = json!({
        "v": 1, "kind": "message.send", "id": uuid::Uuid::now_v7(), "sentAt": chrono::Utc::now(),
        "data": { "conversationId": conversation, "senderId": "alice", "content": "once",
                  "expiresAt": chrono::Utc::now() + chrono::Duration::seconds(60) }
    })
    .to_string()
    .into_bytes();
    let db = env.db().await;
    let stored = || async {
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM messages WHERE conversation_id = $1::uuid")
                .bind(&conversation)
                .fetch_one(&db)
                .await
                .expect("count");
        count
    };
    env.publish_raw(EVENTS_TOPIC, &shard, "message.send", &command).await;
    switchboard_tests::eventually("the first copy to be stored", Duration::from_secs(10), || async {
        (stored().await == 1).then_some(())
    })
    .await;

    let mut driver = Driver::start().await;
    driver.connect("b", &edge.url(), as_user("bob")).await.expect("bob connects");
    env.publish_raw(EVENTS_TOPIC, &shard, "message.send", &command).await;
    let message = driver.event("b", "message:new").await;
    assert_eq!((message["seq"].clone(), message["content"].clone()), (json!(1), json!("once")), "{message}");
    assert_eq!(stored().await, 1, "stored once");
}
