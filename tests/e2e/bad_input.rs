//! Bad input and poison messages (issue 13): refused at the door, and never able to stall a
//! queue once past it.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::{
    bus::{FixedRoute, Shard, topology},
    contract::{ConversationId, bus::CreateNotification, client::event},
};
use switchboard_tests::{Bin, Driver, Running, TestEnv, as_user, eventually, raw_envelope};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

/// One edge, the workers a test asks for, sessions for every user, and a driver.
struct World {
    env: TestEnv,
    edge: Running,
    workers: Vec<Running>,
    driver: Driver,
}

impl World {
    async fn start(workers: &[Bin]) -> World {
        let env = TestEnv::new().await;
        let mut running = Vec::new();
        for bin in workers {
            running.push(env.spawn_ready(*bin, &[]).await);
        }
        let edge = env.spawn_ready(Bin::Edge, &[]).await;
        for user in ["alice", "bob", "carol"] {
            env.add_session(&format!("{user}-token"), user, HOUR).await;
        }
        World { env, edge, workers: running, driver: Driver::start().await }
    }

    async fn connect(&mut self, client: &str, user: &str) {
        let url = self.edge.url();
        self.driver.connect(client, &url, as_user(user)).await.unwrap_or_else(|e| panic!("{client}: {e}"));
    }

    /// The dead-letter queue's messages as `(queue, reason)`, in order.
    async fn parked(&self) -> Vec<(String, String)> {
        self.env
            .dead_letters()
            .await
            .iter()
            .map(|m| {
                let headers = &m["properties"]["headers"];
                (
                    headers["x-switchboard-queue"].as_str().unwrap_or_default().to_owned(),
                    headers["x-switchboard-reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<success>")
}

#[tokio::test]
async fn every_client_event_and_ingress_route_refuses_an_array() {
    let mut w = World::start(&[Bin::Messages]).await;
    let conversation = w.env.create_conversation(&w.edge, &["alice", "bob"]).await;
    w.connect("a", "alice").await;
    w.connect("b", "bob").await;
    let message = uuid::Uuid::now_v7().to_string();
    // Each event's payload written as the array of its fields in order: what serde's derived
    // structs accept unless told otherwise.
    let arrays = [
        (event::MESSAGE_SEND, json!([conversation, "hi", "c-1"])),
        (event::MESSAGE_READ, json!([conversation, message])),
        (event::CONVERSATION_JOIN, json!([conversation])),
        (event::CONVERSATION_LEAVE, json!([conversation])),
        (event::TYPING_START, json!([conversation])),
        (event::TYPING_STOP, json!([conversation])),
        (event::MESSAGES_SYNC, json!([conversation, 0, 10])),
        (event::PRESENCE_QUERY, json!([["bob"]])),
        (event::NOTIFICATIONS_LIST, json!([false, 5])),
        (event::NOTIFICATION_READ, json!([message])),
    ];
    for (name, payload) in arrays {
        let reply = w.driver.emit_ack("a", name, json!([payload])).await;
        assert_eq!(code(&reply), "invalid", "{name} with an array: {reply}");
        let reason = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(reason.contains("expected a JSON object"), "{name}: {reason}");
    }
    // Other JSON values are not objects either.
    for payload in [json!("hi"), json!(7), json!(null)] {
        let reply = w.driver.emit_ack("a", event::MESSAGE_SEND, json!([payload])).await;
        assert_eq!(code(&reply), "invalid", "{payload}: {reply}");
    }
    w.driver.no_event("b", "message:new", Duration::from_millis(300)).await;
    assert_eq!(w.env.count("SELECT count(*) FROM messages").await, 0);

    let bodies = [
        ("/api/v1/emit", r#"["bob", "hello", {}]"#),
        ("/api/v1/conversations", r#"[["alice", "carol"]]"#),
        ("/api/v1/matches", r#"["m-1", ["alice", "carol"]]"#),
        ("/api/v1/notifications", r#"["bob", "system", "Hi", "Welcome"]"#),
        ("/api/v1/presence/query", r#"[["alice", "carol"]]"#),
    ];
    for (path, body) in bodies {
        let (status, reply) =
            w.edge.call(reqwest::Method::POST, path, Some(switchboard_tests::INGRESS_KEY), Some(body)).await;
        assert_eq!((status, code(&reply)), (400, "invalid"), "{path} with an array: {reply}");
    }
    assert_eq!(w.env.count("SELECT count(*) FROM conversations").await, 1);
}

#[tokio::test]
async fn a_nul_in_a_message_is_refused_and_its_shard_goes_on() {
    let mut w = World::start(&[Bin::Messages]).await;
    let conversation = w.env.create_conversation(&w.edge, &["alice", "bob"]).await;
    w.connect("a", "alice").await;
    w.connect("b", "bob").await;
    let send = |content: &str| json!({ "conversationId": conversation, "content": content });

    // At the door: the text rules.
    for bad in ["a\u{0}b", "a\rb", "\u{202E}gnp.exe", "\u{200B}\u{200D}"] {
        let reply = w.driver.emit_ack("a", event::MESSAGE_SEND, send(bad)).await;
        assert_eq!(code(&reply), "invalid", "{bad:?}: {reply}");
    }

    // Past the door: a command published straight to the conversation's shard by another
    // publisher, with a NUL PostgreSQL would refuse. It is parked, and the messages behind it
    // in the same shard are stored within the ack timeout.
    let id: ConversationId = conversation.parse().expect("a conversation id");
    let shard = Shard::of(id).key();
    let poison = raw_envelope(
        "message.send",
        json!({
            "conversationId": conversation, "senderId": "alice", "content": "a\u{0}b",
            "expiresAt": chrono::Utc::now() + chrono::Duration::seconds(60)
        }),
    );
    w.env.publish_raw(topology::EVENTS_TOPIC, &shard, "message.send", &poison).await;
    let replies = w
        .driver
        .emit_ack_many("a", event::MESSAGE_SEND, (1..=5).map(|i| send(&format!("m{i}"))).collect())
        .await;
    let seqs: Vec<Value> = replies.iter().map(|r| r["seq"].clone()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5].map(|n| json!(n)), "{replies:?}");
    assert_eq!(w.parked().await, [(shard.clone(), "malformed".to_owned())]);

    // Data the database refuses for a reason of its own (here a constraint this test adds)
    // is answered `invalid` for that one command; the rest of its batch is stored in order.
    let db = w.env.db().await;
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT test_no_poison CHECK (content <> 'poison')")
        .execute(&db)
        .await
        .expect("add the constraint");
    let replies = w
        .driver
        .emit_ack_many("a", event::MESSAGE_SEND, vec![send("m6"), send("poison"), send("m7"), send("m8")])
        .await;
    let outcomes: Vec<String> = replies
        .iter()
        .map(|r| r["seq"].as_i64().map_or_else(|| code(r).to_owned(), |s| s.to_string()))
        .collect();
    assert_eq!(outcomes, ["6", "invalid", "7", "8"], "{replies:?}");
    assert_eq!(replies[1]["error"]["message"], "the message could not be stored");
    assert_eq!(w.parked().await, [(shard.clone(), "malformed".to_owned()), (shard, "refused".to_owned())]);
    let contents: Vec<(String,)> =
        sqlx::query_as("SELECT content FROM messages ORDER BY seq").fetch_all(&db).await.expect("messages");
    let contents: Vec<&str> = contents.iter().map(|(c,)| c.as_str()).collect();
    assert_eq!(contents, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
    let received = w.driver.events_until_quiet("b", "message:new", Duration::from_millis(300)).await;
    assert_eq!(received.len(), 8, "bob gets every stored message and no other: {received:?}");
}

#[tokio::test]
async fn notifications_the_database_cannot_store_are_parked_and_the_next_is_delivered() {
    let mut w = World::start(&[Bin::Notifier]).await;
    w.connect("b", "bob").await;
    // At the door: 400, nothing published.
    for bad in [
        json!({ "userId": "bob", "type": "system", "title": "a\u{0}b", "message": "m" }),
        json!({ "userId": "bob", "type": "system", "title": "t", "message": "m", "data": { "k": "\u{0}" } }),
        json!({ "userId": "bob", "type": "system", "title": "t", "message": "\u{200B}" }),
    ] {
        let (status, reply) = w.edge.post("/api/v1/notifications", bad.clone()).await;
        assert_eq!((status, code(&reply)), (400, "invalid"), "{bad}: {reply}");
    }

    // Past the door: eight notifications with a NUL (as many as the notifier handles at once),
    // published by another publisher. The next one is still delivered.
    for i in 0..8 {
        let data = if i % 2 == 0 {
            json!({ "id": uuid::Uuid::now_v7(), "userId": "bob", "type": "system", "title": "a\u{0}", "message": "m" })
        } else {
            json!({ "id": uuid::Uuid::now_v7(), "userId": "bob", "type": "system", "title": "t", "message": "m",
                    "data": { "k": "\u{0}" } })
        };
        let body = raw_envelope("notification.create", data);
        w.env
            .publish_raw(CreateNotification::EXCHANGE, CreateNotification::KEY, "notification.create", &body)
            .await;
    }
    let good = json!({ "userId": "bob", "type": "system", "title": "Hello", "message": "Welcome" });
    let (status, reply) = w.edge.post("/api/v1/notifications", good.clone()).await;
    assert_eq!(status, 202, "{reply}");
    let pushed = w.driver.event("b", "notification:new").await;
    assert_eq!((pushed["id"].clone(), pushed["title"].clone()), (reply["id"].clone(), json!("Hello")));
    let parked = eventually("eight parked notifications", Duration::from_secs(10), || async {
        let parked = w.parked().await;
        (parked.len() == 8).then_some(parked)
    })
    .await;
    assert!(
        parked.iter().all(|p| *p == ("notifier.notifications".to_owned(), "malformed".to_owned())),
        "{parked:?}"
    );

    // Refused by the database itself (a constraint this test adds): parked as `refused`, and
    // the queue goes on.
    let db = w.env.db().await;
    sqlx::query("ALTER TABLE notifications ADD CONSTRAINT test_no_poison CHECK (title <> 'poison')")
        .execute(&db)
        .await
        .expect("add the constraint");
    let poison = json!({ "userId": "bob", "type": "system", "title": "poison", "message": "m" });
    assert_eq!(w.edge.post("/api/v1/notifications", poison).await.0, 202);
    let (status, reply) = w.edge.post("/api/v1/notifications", good).await;
    assert_eq!(status, 202);
    let pushed = w.driver.event("b", "notification:new").await;
    assert_eq!(pushed["id"], reply["id"]);
    eventually("the refused notification parked", Duration::from_secs(10), || async {
        w.parked().await.contains(&("notifier.notifications".to_owned(), "refused".to_owned())).then_some(())
    })
    .await;
    w.driver.no_event("b", "notification:new", Duration::from_millis(300)).await;
    assert_eq!(w.env.count("SELECT count(*) FROM notifications").await, 2);
}

#[tokio::test]
async fn a_client_message_id_belongs_to_one_conversation() {
    let mut w = World::start(&[Bin::Messages]).await;
    let with_bob = w.env.create_conversation(&w.edge, &["alice", "bob"]).await;
    let with_carol = w.env.create_conversation(&w.edge, &["alice", "carol"]).await;
    w.connect("a", "alice").await;
    w.connect("c", "carol").await;
    let send = |conversation: &str, content: &str| json!({ "conversationId": conversation, "content": content, "clientMessageId": "same-id" });
    let first = w.driver.emit_ack("a", event::MESSAGE_SEND, send(&with_bob, "to bob")).await;
    let second = w.driver.emit_ack("a", event::MESSAGE_SEND, send(&with_carol, "to carol")).await;
    assert_eq!((first["success"].clone(), second["success"].clone()), (json!(true), json!(true)));
    assert_ne!(first["messageId"], second["messageId"], "a new message in the other conversation");
    assert_eq!(second["seq"], 1);
    let new = w.driver.event("c", "message:new").await;
    assert_eq!((new["content"].clone(), new["id"].clone()), (json!("to carol"), second["messageId"].clone()));
    // Within one conversation the id still makes a retry safe.
    let retry = w.driver.emit_ack("a", event::MESSAGE_SEND, send(&with_bob, "to bob")).await;
    assert_eq!((retry["messageId"].clone(), retry["seq"].clone()), (first["messageId"].clone(), json!(1)));
    assert_eq!(w.env.count("SELECT count(*) FROM messages").await, 2);
}

/// Issue 17: errors speak the contract's language, not Rust's: a bad id names the field, a
/// missing key is `unauthorized`, and an unknown route or method has the JSON error body too.
#[tokio::test]
async fn errors_name_the_field_and_use_the_contract_codes() {
    let mut w = World::start(&[Bin::Messages]).await;
    w.connect("a", "alice").await;
    let invalid =
        |message: &str| json!({ "success": false, "error": { "code": "invalid", "message": message } });
    for (name, payload, message) in [
        (
            event::MESSAGE_SEND,
            json!({ "conversationId": "nope", "content": "hi" }),
            "conversationId must be a UUID",
        ),
        (
            event::CONVERSATION_JOIN,
            json!({ "conversationId": 7 }),
            "invalid type: integer `7`, expected conversationId as a UUID string",
        ),
        (
            event::MESSAGE_READ,
            json!({ "conversationId": ConversationId::new(), "messageId": "n" }),
            "messageId must be a UUID",
        ),
        (event::NOTIFICATION_READ, json!({ "id": "x" }), "notification id must be a UUID"),
    ] {
        let reply = w.driver.emit_ack("a", name, json!([payload])).await;
        assert_eq!(reply, invalid(message), "{name}");
    }

    let key = Some(switchboard_tests::INGRESS_KEY);
    let post = reqwest::Method::POST;
    let body = r#"{"room": "conversation:nope", "event": "hello", "data": {}}"#;
    let (status, reply) = w.edge.call(post.clone(), "/api/v1/emit", key, Some(body)).await;
    assert_eq!(
        (status, reply),
        (400, json!({ "error": { "code": "invalid", "message": "conversation room id must be a UUID" } }))
    );
    let body = r#"{"userId": "a b", "event": "hello", "data": {}}"#;
    let (status, reply) = w.edge.call(post.clone(), "/api/v1/emit", key, Some(body)).await;
    assert_eq!(
        (status, reply["error"]["message"].as_str()),
        (400, Some("userId contains ' '; allowed are A-Z a-z 0-9 _ . : @ -"))
    );
    // Broken JSON keeps its position: that is where to look.
    let (status, reply) = w.edge.call(post.clone(), "/api/v1/emit", key, Some("{")).await;
    assert_eq!(
        (status, reply["error"]["message"].as_str()),
        (400, Some("EOF while parsing an object at line 1 column 1"))
    );

    let unauthorized =
        json!({ "error": { "code": "unauthorized", "message": "a valid ingress key is required" } });
    for key in [None, Some("wrong-key")] {
        let (status, reply) = w.edge.call(post.clone(), "/api/v1/emit", key, Some("{}")).await;
        assert_eq!((status, reply), (401, unauthorized.clone()), "{key:?}");
    }

    let not_found = json!({ "error": { "code": "not_found", "message": "no such route" } });
    let not_allowed = json!({ "error": { "code": "method_not_allowed", "message": "this route does not take that method" } });
    let worker = &w.workers[0];
    for process in [&w.edge, worker] {
        let (status, reply) = process.call(reqwest::Method::GET, "/nothing/here", None, None).await;
        assert_eq!((status, reply), (404, not_found.clone()), "{}", process.bin.name());
        let (status, reply) = process.call(post.clone(), "/healthz", None, None).await;
        assert_eq!((status, reply), (405, not_allowed.clone()), "{}", process.bin.name());
    }
    let (status, reply) = w.edge.call(reqwest::Method::GET, "/api/v1/matches", key, None).await;
    assert_eq!((status, reply), (405, not_allowed));
}
