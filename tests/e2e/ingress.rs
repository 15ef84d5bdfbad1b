//! The ingress calls of issue 18 that read and act for backends: a conversation's messages,
//! the presence of any users, a user's conversations, and ending a user's sockets everywhere.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, INGRESS_KEY, Running, TestEnv, as_user, eventually};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

/// An edge with the workers behind it, sessions for the users, and one driver.
struct World {
    env: TestEnv,
    edges: Vec<Running>,
    _workers: Vec<Running>,
    driver: Driver,
}

impl World {
    async fn start(users: &[&str], edges: usize) -> World {
        let env = TestEnv::new().await;
        // A short grace, so a user who leaves is offline soon.
        let presence_env = [("PRESENCE_OFFLINE_GRACE_MS", "200")];
        let (messages, presence, notifier) = tokio::join!(
            env.spawn_ready(Bin::Messages, &[]),
            env.spawn_ready(Bin::Presence, &presence_env),
            env.spawn_ready(Bin::Notifier, &[]),
        );
        let mut running = Vec::new();
        for _ in 0..edges {
            running.push(env.spawn_ready(Bin::Edge, &[]).await);
        }
        for user in users {
            env.add_session(&format!("{user}-token"), user, HOUR).await;
        }
        World {
            env,
            edges: running,
            _workers: vec![messages, presence, notifier],
            driver: Driver::start().await,
        }
    }

    async fn connect(&mut self, client: &str, user: &str, edge: usize) {
        let url = self.edges[edge].url();
        self.driver.connect(client, &url, as_user(user)).await.unwrap_or_else(|e| panic!("{client}: {e}"));
    }

    /// An ingress request with the test key.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        self.edges[0].call(method, path, Some(INGRESS_KEY), body.as_deref()).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

#[tokio::test]
async fn a_backend_reads_a_conversations_messages_page_by_page() {
    let mut w = World::start(&["alice", "bob"], 1).await;
    let conversation = w.env.create_conversation(&w.edges[0], &["alice", "bob"]).await;
    w.connect("a", "alice", 0).await;
    let mut sent = Vec::new();
    for content in ["one", "two", "three"] {
        let ack = w
            .driver
            .emit_ack("a", "message:send", json!({ "conversationId": conversation, "content": content }))
            .await;
        assert_eq!(ack["success"], true, "{ack}");
        sent.push((ack["messageId"].clone(), content));
    }
    // What a page holds, less `createdAt` (checked to be there).
    let summary = |page: &Value| -> Vec<Value> {
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                assert!(m["createdAt"].is_string(), "{m}");
                json!([m["id"], m["conversationId"], m["senderId"], m["content"], m["seq"]])
            })
            .collect()
    };
    let expected = |seq: usize| {
        let (id, content) = &sent[seq - 1];
        json!([id, conversation, "alice", content, seq])
    };

    let path = format!("/api/v1/conversations/{conversation}/messages");
    let (status, first) = w.get(&format!("{path}?limit=2")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(summary(&first), vec![expected(1), expected(2)]);
    assert_eq!(first["hasMore"], true);
    let (status, rest) = w.get(&format!("{path}?afterSeq=2&limit=2")).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(summary(&rest), vec![expected(3)]);
    assert_eq!(rest["hasMore"], false);
    let (status, all) = w.get(&path).await;
    assert_eq!((status, summary(&all)), (200, vec![expected(1), expected(2), expected(3)]));

    let unknown = uuid::Uuid::now_v7();
    let (status, body) = w.get(&format!("/api/v1/conversations/{unknown}/messages")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = w.get(&format!("{path}?limit=0")).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid")), "{body}");
    let (status, body) = w.get("/api/v1/conversations/nope/messages").await;
    assert_eq!(
        (status, body),
        (400, json!({ "error": { "code": "invalid", "message": "conversationId must be a UUID" } }))
    );
    let (status, body) = w.edges[0].call(reqwest::Method::GET, &path, None, None).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthorized")));
}

#[tokio::test]
async fn a_backend_asks_the_presence_of_any_users() {
    let mut w = World::start(&["alice", "carol"], 1).await;
    w.connect("a", "alice", 0).await;
    w.connect("c", "carol", 0).await;
    w.driver.disconnect("c").await;
    let ask = json!({ "userIds": ["alice", "carol", "nobody"] });
    // alice shares no conversation with anyone: a backend is answered all the same.
    let reply = eventually("alice online and carol offline", Duration::from_secs(10), || async {
        let (status, reply) =
            w.call(reqwest::Method::POST, "/api/v1/presence/query", Some(ask.clone())).await;
        assert_eq!(status, 200, "{reply}");
        let users = &reply["users"];
        (users["alice"]["online"] == true
            && users["carol"]["online"] == false
            && users["carol"]["lastSeenAt"].is_string())
        .then_some(reply)
    })
    .await;
    let users = reply["users"].as_object().expect("users");
    assert_eq!(users.keys().collect::<Vec<_>>(), ["alice", "carol", "nobody"]);
    assert_eq!(users["alice"], json!({ "online": true, "lastSeenAt": null }));
    assert_eq!(users["nobody"], json!({ "online": false, "lastSeenAt": null }));

    let too_many: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
    for bad in [json!({ "userIds": [] }), json!({ "userIds": too_many }), json!({ "userIds": ["a b"] })] {
        let (status, body) = w.call(reqwest::Method::POST, "/api/v1/presence/query", Some(bad)).await;
        assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid")), "{body}");
    }
    let (status, _) =
        w.edges[0].call(reqwest::Method::POST, "/api/v1/presence/query", None, Some(&ask.to_string())).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_backend_lists_a_users_conversations_open_and_closed() {
    let w = World::start(&[], 1).await;
    let plain = w.env.create_conversation(&w.edges[0], &["bob", "alice"]).await;
    let (status, matched) = w
        .call(
            reqwest::Method::POST,
            "/api/v1/matches",
            Some(json!({ "matchId": "m-1", "userIds": ["carol", "alice"] })),
        )
        .await;
    assert_eq!(status, 202, "{matched}");
    let matched = matched["conversationId"].clone();
    let (status, _) = w.call(reqwest::Method::DELETE, "/api/v1/matches/m-1", None).await;
    assert_eq!(status, 202);

    let list = eventually("the unmatched conversation closed", Duration::from_secs(10), || async {
        let (status, list) = w.get("/api/v1/users/alice/conversations").await;
        assert_eq!(status, 200, "{list}");
        list["conversations"][0]["closedAt"].is_string().then_some(list)
    })
    .await;
    let conversations = list["conversations"].as_array().expect("conversations");
    assert_eq!(conversations.len(), 2, "{list}");
    for c in conversations {
        assert!(c["createdAt"].is_string(), "{c}");
    }
    let without_times = |c: &Value| {
        json!([c["conversationId"], c["participants"], c["matchId"], c["closedAt"].is_null(), c["lastSeq"]])
    };
    // Newest first: the match's conversation was made after the other.
    assert_eq!(without_times(&conversations[0]), json!([matched, ["alice", "carol"], "m-1", false, 0]));
    assert_eq!(without_times(&conversations[1]), json!([plain, ["alice", "bob"], null, true, 0]));

    let (status, bob) = w.get("/api/v1/users/bob/conversations").await;
    assert_eq!((status, bob["conversations"].as_array().map(Vec::len)), (200, Some(1)));
    let (status, nobody) = w.get("/api/v1/users/nobody/conversations").await;
    assert_eq!((status, nobody), (200, json!({ "conversations": [] })));
    let (status, body) = w.get("/api/v1/users/a%20b/conversations").await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid")), "{body}");
    let (status, _) =
        w.edges[0].call(reqwest::Method::GET, "/api/v1/users/alice/conversations", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_backend_ends_a_users_sockets_on_every_edge_and_revokes_cached_sessions() {
    let mut w = World::start(&["alice", "bob"], 2).await;
    w.connect("a0", "alice", 0).await;
    w.connect("a1", "alice", 1).await;
    w.connect("b", "bob", 0).await;
    // The host application deletes alice's sessions; edge 0 still has hers cached.
    sqlx::query("DELETE FROM sessions WHERE user_id = 'alice'")
        .execute(&w.env.db().await)
        .await
        .expect("delete");

    let (status, body) = w.call(reqwest::Method::DELETE, "/api/v1/users/alice/sockets", None).await;
    assert_eq!((status, body), (202, json!({})));
    assert_eq!(w.driver.disconnected("a0").await, "io server disconnect");
    assert_eq!(w.driver.disconnected("a1").await, "io server disconnect");
    // bob's socket on the same edge stays.
    let ack = w.driver.emit_ack("b", "notifications:list", json!({})).await;
    assert_eq!(ack["success"], true, "{ack}");
    // Without revocation the cached session still lets alice back in on edge 0.
    w.connect("a2", "alice", 0).await;

    let (status, _) =
        w.call(reqwest::Method::DELETE, "/api/v1/users/alice/sockets?revokeSessions=true", None).await;
    assert_eq!(status, 202);
    assert_eq!(w.driver.disconnected("a2").await, "io server disconnect");
    let url = w.edges[0].url();
    let refused = w.driver.connect("a3", &url, as_user("alice")).await;
    assert_eq!(refused, Err("unauthorized".to_owned()));

    let (status, body) =
        w.call(reqwest::Method::DELETE, "/api/v1/users/alice/sockets?revokeSessions=maybe", None).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid")), "{body}");
    let (status, body) = w.call(reqwest::Method::DELETE, "/api/v1/users/a%20b/sockets", None).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid")), "{body}");
    let (status, _) =
        w.edges[0].call(reqwest::Method::DELETE, "/api/v1/users/alice/sockets", None, None).await;
    assert_eq!(status, 401);
}

/// The same four calls from a Rust backend, over the bus (`switchboard::backend`).
#[tokio::test]
async fn the_rust_library_makes_the_same_calls_over_the_bus() {
    use switchboard::{
        backend,
        bus::RequestError,
        contract::{ErrorCode, UserId, bus::CreateConversation},
    };
    let timeout = Duration::from_secs(5);
    let mut w = World::start(&["alice", "bob"], 1).await;
    let bus = w.env.bus("a-backend").await;
    let (alice, bob, nobody): (UserId, UserId, UserId) =
        ("alice".parse().expect("id"), "bob".parse().expect("id"), "nobody".parse().expect("id"));
    let create = CreateConversation { participants: vec![alice.clone(), bob.clone()], match_id: None };
    let conversation = backend::create_conversation(&bus, &create, timeout).await.expect("created");
    w.connect("a", "alice", 0).await;
    let ack = w
        .driver
        .emit_ack("a", "message:send", json!({ "conversationId": conversation, "content": "hi" }))
        .await;
    assert_eq!(ack["success"], true, "{ack}");

    let page = backend::conversation_messages(&bus, conversation, 0, 10, timeout).await.expect("a page");
    assert_eq!(page.messages.len(), 1);
    assert_eq!((page.messages[0].seq, page.messages[0].content.as_str(), page.has_more), (1, "hi", false));
    let code = |error: RequestError| match error {
        RequestError::Refused(refusal) => refusal.code,
        other => panic!("not a refusal: {other}"),
    };
    let unknown = switchboard::contract::ConversationId::new();
    let missing = backend::conversation_messages(&bus, unknown, 0, 10, timeout).await.expect_err("unknown");
    assert_eq!(code(missing), ErrorCode::NotFound);
    let zero = backend::conversation_messages(&bus, conversation, 0, 0, timeout).await.expect_err("limit 0");
    assert_eq!(code(zero), ErrorCode::Invalid);

    let reply = eventually("alice online", Duration::from_secs(10), || async {
        let reply =
            backend::presence(&bus, vec![alice.clone(), nobody.clone()], timeout).await.expect("presence");
        reply.users.get(&alice).is_some_and(|p| p.online).then_some(reply)
    })
    .await;
    let absent = &reply.users[&nobody];
    assert_eq!((reply.users.len(), absent.online, absent.last_seen_at), (2, false, None));
    let empty = backend::presence(&bus, Vec::new(), timeout).await.expect_err("no ids");
    assert_eq!(code(empty), ErrorCode::Invalid);

    let listed = backend::user_conversations(&bus, &alice, timeout).await.expect("conversations");
    assert_eq!(listed.conversations.len(), 1);
    let only = &listed.conversations[0];
    assert_eq!(
        (only.conversation_id, &only.participants, only.last_seq),
        (conversation, &vec![alice.clone(), bob], 1)
    );

    backend::disconnect_user(&bus, &alice, false).await.expect("confirmed");
    assert_eq!(w.driver.disconnected("a").await, "io server disconnect");
}
