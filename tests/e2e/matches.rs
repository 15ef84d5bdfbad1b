//! Matches and notifications (issue 6): the notifier, the inbox for offline users, and the
//! unmatch.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use switchboard_tests::{Bin, Driver, Running, TestEnv, as_user, eventually};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

struct World {
    env: TestEnv,
    edges: Vec<Running>,
    _messages: Running,
    notifier: Option<Running>,
    driver: Driver,
}

impl World {
    async fn start(with_notifier: bool) -> World {
        let env = TestEnv::new().await;
        let messages = env.spawn_ready(Bin::Messages, &[]).await;
        let notifier = if with_notifier { Some(env.spawn_ready(Bin::Notifier, &[]).await) } else { None };
        let (e1, e2) = tokio::join!(env.spawn_ready(Bin::Edge, &[]), env.spawn_ready(Bin::Edge, &[]));
        for user in ["alice", "bob", "carol", "dave"] {
            env.add_session(&format!("{user}-token"), user, HOUR).await;
        }
        World { env, edges: vec![e1, e2], _messages: messages, notifier, driver: Driver::start().await }
    }

    async fn connect(&mut self, client: &str, user: &str, edge: usize) {
        let url = self.edges[edge].url();
        self.driver.connect(client, &url, as_user(user)).await.unwrap_or_else(|e| panic!("{client}: {e}"));
    }
}

#[tokio::test]
async fn a_match_reaches_both_users_once_and_opens_a_conversation() {
    let mut w = World::start(true).await;
    w.connect("a", "alice", 0).await;
    w.connect("b", "bob", 1).await;
    let post = json!({ "matchId": "m-1", "userIds": ["alice", "bob"], "createdAt": "2026-11-25T12:00:00Z" });
    let (status, reply) = w.edges[0].post("/api/v1/matches", post.clone()).await;
    assert_eq!(status, 202, "{reply}");
    // The answer names the match's conversation: the one its users get.
    let conversation = reply["conversationId"].as_str().expect("conversationId").to_owned();
    assert_eq!(reply, json!({ "matchId": "m-1", "conversationId": conversation }));

    let new_a = w.driver.event("a", "match:new").await;
    assert_eq!(
        new_a,
        json!({ "matchId": "m-1", "userId": "bob", "conversationId": conversation, "createdAt": "2026-11-25T12:00:00Z" })
    );
    let new_b = w.driver.event("b", "match:new").await;
    assert_eq!(
        (new_b["userId"].clone(), new_b["conversationId"].clone()),
        (json!("alice"), json!(conversation))
    );
    for (client, me, other) in [("a", "alice", "bob"), ("b", "bob", "alice")] {
        let notification = w.driver.event(client, "notification:new").await;
        assert_eq!(notification["type"], "match");
        assert_eq!(notification["userId"], me);
        assert_eq!(
            notification["data"],
            json!({ "matchId": "m-1", "conversationId": conversation, "otherUserId": other })
        );
        assert!(notification["id"].as_str().is_some() && notification["timestamp"].as_str().is_some());
    }

    // The same match again changes nothing, and answers the same.
    let again = w.edges[1].post("/api/v1/matches", post).await;
    assert_eq!(again, (202, json!({ "matchId": "m-1", "conversationId": conversation })));
    // The same matchId naming other users is a mistake, refused: no one joins the conversation.
    let other = json!({ "matchId": "m-1", "userIds": ["alice", "carol"] });
    let refused = json!({ "error": { "code": "invalid", "message": "matchId already names a match between other users" } });
    assert_eq!(w.edges[0].post("/api/v1/matches", other).await, (400, refused));
    w.driver.no_event("a", "match:new", Duration::from_millis(1500)).await;
    w.driver.no_event("b", "notification:new", Duration::from_millis(10)).await;
    assert_eq!(w.env.count("SELECT count(*) FROM conversations WHERE match_id = 'm-1'").await, 1);
    assert_eq!(w.env.count("SELECT count(*) FROM notifications WHERE match_id = 'm-1'").await, 2);
    assert_eq!(
        w.env.count("SELECT count(*) FROM conversation_participants WHERE user_id = 'carol'").await,
        0
    );

    // The conversation works.
    let ack = w
        .driver
        .emit_ack("a", "message:send", json!({ "conversationId": conversation, "content": "hi" }))
        .await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert_eq!(w.driver.event("b", "message:new").await["content"], "hi");
}

#[tokio::test]
async fn a_notification_waits_for_an_offline_user_and_only_they_can_read_it() {
    let mut w = World::start(true).await;
    let body = json!({ "userId": "carol", "type": "system", "title": "Welcome", "message": "Hello Carol", "data": { "k": 1 } });
    let (status, reply) = w.edges[0].post("/api/v1/notifications", body).await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().expect("id").to_owned();
    // Stored, and not delivered: carol has no socket.
    eventually("the notification to be stored", Duration::from_secs(10), || async {
        (w.env.count("SELECT count(*) FROM notifications WHERE delivered_at IS NULL").await == 1)
            .then_some(())
    })
    .await;

    w.connect("c", "carol", 1).await;
    let pushed = w.driver.event("c", "notification:new").await;
    assert_eq!(
        (
            pushed["id"].clone(),
            pushed["type"].clone(),
            pushed["title"].clone(),
            pushed["message"].clone(),
            pushed["data"].clone()
        ),
        (json!(id), json!("system"), json!("Welcome"), json!("Hello Carol"), json!({ "k": 1 }))
    );
    assert_eq!(pushed["userId"], "carol");

    let list = w.driver.emit_ack("c", "notifications:list", json!({})).await;
    assert_eq!(list["notifications"].as_array().map(|n| n.len()), Some(1), "{list}");
    assert_eq!(list["notifications"][0]["id"], json!(id));
    w.connect("d", "dave", 0).await;
    let forbidden = json!({ "success": false, "error": { "code": "forbidden", "message": "not allowed" } });
    assert_eq!(w.driver.emit_ack("d", "notification:read", json!({ "id": id })).await, forbidden);
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(w.driver.emit_ack("d", "notification:read", json!({ "id": unknown })).await, forbidden);
    assert_eq!(
        w.driver.emit_ack("d", "notifications:list", json!({})).await,
        json!({ "success": true, "notifications": [] })
    );
    assert_eq!(
        w.driver.emit_ack("c", "notification:read", json!({ "id": id })).await,
        json!({ "success": true })
    );
    let unread = w.driver.emit_ack("c", "notifications:list", json!({ "unreadOnly": true })).await;
    assert_eq!(unread, json!({ "success": true, "notifications": [] }));
    let all = w.driver.emit_ack("c", "notifications:list", json!({ "limit": 5 })).await;
    assert!(all["notifications"][0]["readAt"].as_str().is_some(), "{all}");
    assert_eq!(
        w.driver.emit_ack("c", "notification:read", json!({ "id": "nope" })).await["error"]["code"],
        "invalid"
    );
}

#[tokio::test]
async fn the_unmatch_closes_the_conversation_for_both() {
    let mut w = World::start(true).await;
    w.connect("a", "alice", 0).await;
    w.connect("b", "bob", 1).await;
    assert_eq!(
        w.edges[0].post("/api/v1/matches", json!({ "matchId": "m-2", "userIds": ["bob", "alice"] })).await.0,
        202
    );
    let conversation =
        w.driver.event("a", "match:new").await["conversationId"].as_str().expect("id").to_owned();
    w.driver.event("b", "match:new").await;
    let room = json!({ "conversationId": conversation });
    for client in ["a", "b"] {
        assert_eq!(w.driver.emit_ack(client, "conversation:join", room.clone()).await["success"], true);
    }

    let delete = reqwest::Method::DELETE;
    let key = Some(switchboard_tests::INGRESS_KEY);
    assert_eq!(w.edges[1].call(delete.clone(), "/api/v1/matches/m-2", key, None).await, (202, json!({})));
    for client in ["a", "b"] {
        assert_eq!(
            w.driver.event(client, "match:removed").await,
            json!({ "matchId": "m-2", "conversationId": conversation })
        );
    }
    let forbidden = json!({ "success": false, "error": { "code": "forbidden", "message": "not allowed" } });
    for client in ["a", "b"] {
        assert_eq!(w.driver.emit_ack(client, "typing:start", room.clone()).await, forbidden, "{client}");
        let send = json!({ "conversationId": conversation, "content": "still there?" });
        assert_eq!(w.driver.emit_ack(client, "message:send", send).await, forbidden, "{client}");
        assert_eq!(w.driver.emit_ack(client, "conversation:join", room.clone()).await, forbidden, "{client}");
        let sync = json!({ "conversationId": conversation, "afterSeq": 0 });
        assert_eq!(w.driver.emit_ack(client, "messages:sync", sync).await, forbidden, "{client}");
    }
    let emit = json!({ "room": format!("conversation:{conversation}"), "event": "leak", "data": 1 });
    assert_eq!(w.edges[0].post("/api/v1/emit", emit).await.0, 202);
    w.driver.no_event("a", "leak", Duration::from_millis(500)).await;
    w.driver.no_event("b", "leak", Duration::from_millis(10)).await;
    // Again, or unknown: a no-op that still answers 202.
    assert_eq!(w.edges[0].call(delete.clone(), "/api/v1/matches/m-2", key, None).await.0, 202);
    assert_eq!(w.edges[0].call(delete, "/api/v1/matches/never", key, None).await.0, 202);
    w.driver.no_event("a", "match:removed", Duration::from_millis(500)).await;
    // A replayed match does not bring it back.
    assert_eq!(
        w.edges[0].post("/api/v1/matches", json!({ "matchId": "m-2", "userIds": ["bob", "alice"] })).await.0,
        202
    );
    w.driver.no_event("a", "match:new", Duration::from_millis(1000)).await;
}

#[tokio::test]
async fn matches_wait_for_the_notifier_and_a_killed_copy_leaves_nothing_half_done() {
    let mut w = World::start(false).await;
    w.connect("a", "alice", 0).await;
    // Posted while no notifier runs: they wait in the queue.
    for i in 0..500 {
        let post = json!({ "matchId": format!("m-{i}"), "userIds": [format!("u{i}"), "alice"] });
        assert_eq!(w.edges[i % 2].post("/api/v1/matches", post).await.0, 202);
    }
    let mut first = w.env.spawn_ready(Bin::Notifier, &[]).await;
    eventually("the first copy to be midway", Duration::from_secs(60), || async {
        let done = first
            .get("/metrics")
            .await
            .1
            .lines()
            .find_map(|l| l.strip_prefix("notifier_matches_total ")?.parse::<f64>().ok());
        done.is_some_and(|n| n >= 50.0).then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).await;
    let _second = w.env.spawn_ready(Bin::Notifier, &[]).await;
    eventually("every match to be handled", Duration::from_secs(120), || async {
        (w.env.count("SELECT count(*) FROM matches WHERE announced_at IS NOT NULL").await == 500)
            .then_some(())
    })
    .await;
    assert_eq!(w.env.count("SELECT count(*) FROM conversations").await, 500);
    assert_eq!(w.env.count("SELECT count(*) FROM notifications").await, 1000);
    assert_eq!(w.env.count("SELECT count(*) FROM notifications WHERE type = 'match'").await, 1000);
    let received = w.driver.events_until_quiet("a", "match:new", Duration::from_millis(500)).await;
    let mut ids: Vec<&str> = received.iter().filter_map(|m| m["matchId"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500, "alice heard of every match (at least once)");
    w.notifier = None;
}

#[tokio::test]
async fn a_match_waits_for_an_absent_messages_worker_and_is_handled_when_it_returns() {
    let env = TestEnv::new().await;
    let mut messages = env.spawn_ready(Bin::Messages, &[]).await;
    let notifier = env.spawn_ready(Bin::Notifier, &[("ACK_TIMEOUT_MS", "1000")]).await;
    let edge = env.spawn_ready(Bin::Edge, &[("ACK_TIMEOUT_MS", "1000")]).await;
    messages.signal(Signal::SIGTERM);
    assert_eq!(messages.wait_exit(Duration::from_secs(10)).await.code(), Some(0));

    // The ingress answers with the match's conversation, so it needs the messages worker: with
    // none, the contract's 504 (no answer in time; trying again is safe), and nothing published.
    let (status, reply) =
        edge.post("/api/v1/matches", json!({ "matchId": "m-wait", "userIds": ["alice", "bob"] })).await;
    assert_eq!((status, &reply["error"]["code"]), (504, &json!("timeout")), "{reply}");
    assert_eq!(env.count("SELECT count(*) FROM matches").await, 0);
    // A backend publishing on the bus does not wait: the notifier keeps the match until the
    // messages worker returns.
    let bus = env.bus("a-backend").await;
    let users = ["alice".parse().expect("a user id"), "bob".parse().expect("a user id")];
    switchboard::backend::publish_match(&bus, &"m-wait".parse().expect("a match id"), users, None)
        .await
        .expect("published");
    eventually("the notifier to take the match", Duration::from_secs(10), || async {
        (env.count("SELECT count(*) FROM matches").await == 1).then_some(())
    })
    .await;
    // The notifier tries (1 s each) and fails more than once: the match waits, and nothing
    // half-made appears meanwhile.
    eventually("the notifier to retry twice", Duration::from_secs(15), || {
        let retries =
            notifier.logs().iter().filter(|l| l.contains("a match could not be handled; retrying")).count();
        async move { (retries >= 2).then_some(()) }
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM notifications").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM matches WHERE announced_at IS NOT NULL").await, 0);

    let _messages = env.spawn_ready(Bin::Messages, &[]).await;
    eventually("the match to be handled once the worker is back", Duration::from_secs(20), || async {
        (env.count("SELECT count(*) FROM matches WHERE announced_at IS NOT NULL").await == 1).then_some(())
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM conversations").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM notifications").await, 2);
}

/// Issue 16: "delivered at the first connect after their creation, every time". Each user gets
/// a notification just before their first connect, and has it at that connect; it is then
/// marked delivered, and a later connect does not bring it again.
#[tokio::test]
async fn a_notification_created_just_before_the_first_connect_is_delivered_at_that_connect() {
    let mut w = World::start(true).await;
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    for user in &users {
        w.env.add_session(&format!("{user}-token"), user, HOUR).await;
    }
    for (i, user) in users.iter().enumerate() {
        let body = json!({ "userId": user, "type": "system", "title": "Hi", "message": "Welcome" });
        let (status, reply) = w.edges[i % 2].post("/api/v1/notifications", body).await;
        assert_eq!(status, 202, "{reply}");
        let id = reply["id"].clone();
        w.connect(user, user, (i + 1) % 2).await;
        let pushed = w.driver.event(user, "notification:new").await;
        assert_eq!((pushed["id"].clone(), pushed["userId"].clone()), (id, json!(user)));
    }
    eventually("every notification marked delivered", Duration::from_secs(10), || async {
        (w.env.count("SELECT count(*) FROM notifications WHERE delivered_at IS NULL").await == 0)
            .then_some(())
    })
    .await;
    // Delivery is at least once (a push and a flush may both bring it to the first socket), but
    // once delivered it is not brought again.
    w.connect("again", &users[0], 0).await;
    w.driver.no_event("again", "notification:new", Duration::from_millis(1500)).await;
}

/// Issue 16: a notification counts as delivered when a socket got it, not when a queue took
/// it. The user's edge is frozen (its socket half-open) when the notification comes, then
/// dies with it: the user's next connect brings it.
#[tokio::test]
async fn a_notification_an_edge_took_but_never_emitted_is_delivered_at_the_next_connect() {
    let mut w = World::start(true).await;
    w.connect("c1", "carol", 0).await;
    w.edges[0].signal(Signal::SIGSTOP);
    let body = json!({ "userId": "carol", "type": "system", "title": "Hi", "message": "Welcome" });
    let (status, reply) = w.edges[1].post("/api/v1/notifications", body).await;
    assert_eq!(status, 202, "{reply}");
    // The frozen edge's queue took it.
    eventually("the frozen edge's queue to hold the notification", Duration::from_secs(20), || async {
        let queues = w.env.rabbit.queues(&w.env.vhost).await;
        queues
            .iter()
            .any(|q| {
                q["name"].as_str().is_some_and(|n| n.starts_with("edge."))
                    && q["messages"].as_u64() >= Some(1)
            })
            .then_some(())
    })
    .await;
    w.edges[0].signal(Signal::SIGKILL);
    w.connect("c2", "carol", 1).await;
    let pushed = w.driver.event("c2", "notification:new").await;
    assert_eq!((pushed["id"].clone(), pushed["userId"].clone()), (reply["id"].clone(), json!("carol")));
    eventually("the notification marked delivered", Duration::from_secs(10), || async {
        (w.env.count("SELECT count(*) FROM notifications WHERE delivered_at IS NOT NULL").await == 1)
            .then_some(())
    })
    .await;
}

/// Inbox flushes that arrive together are checked by one query for many users (the notifier's
/// `waiting`): each user with something waiting gets exactly their own, the others nothing,
/// and every connect was asked about once.
#[tokio::test]
async fn many_users_connecting_at_once_get_exactly_their_waiting_notifications() {
    let mut w = World::start(true).await;
    let users: Vec<String> = (0..40).map(|i| format!("crowd-{i}")).collect();
    for user in &users {
        w.env.add_session(&format!("{user}-token"), user, HOUR).await;
    }
    let waiting: Vec<&String> = users.iter().step_by(2).collect();
    for user in &waiting {
        let body = json!({ "userId": user, "type": "system", "title": "For you", "message": user });
        let (status, reply) = w.edges[0].post("/api/v1/notifications", body).await;
        assert_eq!(status, 202, "{reply}");
    }
    eventually("every notification to be stored", Duration::from_secs(10), || async {
        (w.env.count("SELECT count(*) FROM notifications WHERE delivered_at IS NULL").await == 20)
            .then_some(())
    })
    .await;

    let url = w.edges[1].url();
    let clients: Vec<(String, serde_json::Value)> = users.iter().map(|u| (u.clone(), as_user(u))).collect();
    let results = w.driver.connect_all(&url, &clients).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for user in &waiting {
        let pushed = w.driver.event(user, "notification:new").await;
        assert_eq!((&pushed["userId"], &pushed["message"]), (&json!(user), &json!(user)));
    }
    for user in &users {
        w.driver
            .no_event(
                user,
                "notification:new",
                Duration::from_millis(if user == &users[0] { 500 } else { 5 }),
            )
            .await;
    }
    let notifier = w.notifier.as_ref().expect("a notifier");
    let asked = eventually("every connect's flush to be checked", Duration::from_secs(10), || async {
        let metrics = notifier.get("/metrics").await.1;
        let sum = metrics
            .lines()
            .find_map(|line| line.strip_prefix("notifier_inbox_check_batch_size_sum ")?.parse::<f64>().ok());
        sum.filter(|sum| *sum >= 40.0)
    })
    .await;
    assert_eq!(asked, 40.0, "one check per user's first connect");
}

/// `notification.flushes`, what an edge sends for the users whose first socket connected while
/// its last flush request was on its way: each user of it gets exactly their own waiting
/// notifications, oldest first, and one with nothing waiting gets nothing.
#[tokio::test]
async fn one_flush_request_for_several_users_pushes_each_exactly_their_own() {
    use switchboard::{bus::Durability, contract::bus::FlushInboxes};
    let mut w = World::start(true).await;
    w.connect("a", "alice", 0).await;
    w.connect("b", "bob", 1).await;
    w.connect("c", "carol", 0).await;
    // Their own connects' flushes found nothing; wait until they were checked.
    let notifier = w.notifier.as_ref().expect("a notifier");
    eventually("the connects' flushes to be checked", Duration::from_secs(10), || async {
        let metrics = notifier.get("/metrics").await.1;
        let sum = metrics
            .lines()
            .find_map(|line| line.strip_prefix("notifier_inbox_check_batch_size_sum ")?.parse::<f64>().ok());
        sum.filter(|sum| *sum >= 3.0).map(drop)
    })
    .await;
    // Waiting notifications, as if created while they were away.
    let db = w.env.db().await;
    for (user, message, age_s) in [("alice", "a1", 30), ("bob", "b1", 20), ("bob", "b2", 10)] {
        sqlx::query(
            "INSERT INTO notifications (id, user_id, type, title, message, created_at) \
             VALUES ($1, $2, 'system', 'Waiting', $3, now() - make_interval(secs => $4))",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(message)
        .bind(f64::from(age_s))
        .execute(&db)
        .await
        .expect("inserted");
    }

    let bus = w.env.bus("test-edge").await;
    let ids = ["alice", "bob", "carol"].map(|u| u.parse().expect("valid")).to_vec();
    bus.publish(&FlushInboxes { user_ids: ids }, Durability::Confirmed).await.expect("published");

    assert_eq!(w.driver.event("a", "notification:new").await["message"], "a1");
    assert_eq!(w.driver.event("b", "notification:new").await["message"], "b1");
    assert_eq!(w.driver.event("b", "notification:new").await["message"], "b2");
    for client in ["a", "b", "c"] {
        w.driver.no_event(client, "notification:new", Duration::from_millis(300)).await;
    }
    eventually("every pushed notification to be marked delivered", Duration::from_secs(10), || async {
        (w.env.count("SELECT count(*) FROM notifications WHERE delivered_at IS NULL").await == 0)
            .then_some(())
    })
    .await;
    bus.close().await;
}
