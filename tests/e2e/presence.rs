//! Presence (issue 5): user-level online/offline across two edges, only to contacts, with a
//! grace period, dead edges, and presence worker restarts.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use switchboard_tests::{Bin, Driver, Running, TestEnv, as_user, eventually};

const HOUR: chrono::Duration = chrono::Duration::hours(1);
/// Fast clocks for tests: edges report every 500 ms (dead after 1.5 s), 1 s of grace.
const CLOCKS: [(&str, &str); 2] =
    [("PRESENCE_REPORT_INTERVAL_MS", "500"), ("PRESENCE_OFFLINE_GRACE_MS", "1000")];

struct World {
    env: TestEnv,
    edges: Vec<Running>,
    presence: Running,
    messages: Running,
    driver: Driver,
}

impl World {
    /// alice and bob share a conversation; carol shares none with alice.
    async fn start() -> World {
        let env = TestEnv::new().await;
        let messages = env.spawn_ready(Bin::Messages, &CLOCKS).await;
        let presence = env.spawn_ready(Bin::Presence, &CLOCKS).await;
        let (e1, e2) = tokio::join!(env.spawn_ready(Bin::Edge, &CLOCKS), env.spawn_ready(Bin::Edge, &CLOCKS));
        for user in ["alice", "bob", "carol"] {
            env.add_session(&format!("{user}-token"), user, HOUR).await;
        }
        env.create_conversation(&e1, &["alice", "bob"]).await;
        env.create_conversation(&e1, &["bob", "carol"]).await;
        let world = World { env, edges: vec![e1, e2], presence, messages, driver: Driver::start().await };
        world.warm(&world.presence).await;
        world
    }

    async fn warm(&self, presence: &Running) {
        eventually("the presence worker to warm up", Duration::from_secs(15), || async {
            presence.get("/metrics").await.1.lines().any(|l| l == "presence_warm 1").then_some(())
        })
        .await;
    }

    async fn connect(&mut self, client: &str, user: &str, edge: usize) {
        let url = self.edges[edge].url();
        self.driver.connect(client, &url, as_user(user)).await.unwrap_or_else(|e| panic!("{client}: {e}"));
    }
}

#[tokio::test]
async fn online_once_offline_once_after_grace_and_only_to_contacts() {
    let mut w = World::start().await;
    w.connect("bob", "bob", 1).await;
    w.connect("carol", "carol", 1).await;

    w.connect("alice-1", "alice", 0).await;
    let online = w.driver.event_about("bob", "user:online", "alice").await;
    assert_eq!(online["userId"], "alice");
    assert!(online["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{online}");
    w.connect("alice-2", "alice", 1).await;
    w.driver.no_event_about("bob", "user:online", "alice", Duration::from_millis(1500)).await;
    w.driver.no_event_about("carol", "user:online", "alice", Duration::from_millis(10)).await;

    // presence:query answers only for contacts.
    let reply =
        w.driver.emit_ack("bob", "presence:query", json!({ "userIds": ["alice", "carol", "nobody"] })).await;
    assert_eq!(reply["success"], true, "{reply}");
    let users = reply["users"].as_object().expect("users");
    assert_eq!(users.keys().collect::<Vec<_>>(), ["alice", "carol"]);
    assert_eq!(users["alice"]["online"], true);
    let reply = w.driver.emit_ack("carol", "presence:query", json!({ "userIds": ["alice"] })).await;
    assert_eq!(reply, json!({ "success": true, "users": {} }));
    let reply = w.driver.emit_ack("carol", "presence:query", json!({ "userIds": [] })).await;
    assert_eq!(reply["error"]["code"], "invalid");

    w.driver.disconnect("alice-1").await;
    w.driver.disconnect("alice-2").await;
    let closed = std::time::Instant::now();
    let offline = w.driver.event_about("bob", "user:offline", "alice").await;
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "offline came before the grace period: {:?}",
        closed.elapsed()
    );
    assert_eq!(offline["userId"], "alice");
    assert!(offline["lastSeenAt"].as_str().is_some(), "{offline}");
    w.driver.no_event_about("bob", "user:offline", "alice", Duration::from_millis(1500)).await;
    w.driver.no_event_about("carol", "user:offline", "alice", Duration::from_millis(10)).await;
    let reply = w.driver.emit_ack("bob", "presence:query", json!({ "userIds": ["alice"] })).await;
    assert_eq!(reply["users"]["alice"]["online"], false);
    assert_eq!(reply["users"]["alice"]["lastSeenAt"], offline["lastSeenAt"], "last seen is stored");

    // A reload (reconnect within the grace period) shows nothing at all.
    w.connect("alice-1", "alice", 0).await;
    assert_eq!(w.driver.event_about("bob", "user:online", "alice").await["userId"], "alice");
    w.driver.disconnect("alice-1").await;
    w.connect("alice-1", "alice", 1).await;
    w.driver.no_event_about("bob", "user:offline", "alice", Duration::from_millis(2500)).await;
    w.driver.no_event_about("bob", "user:online", "alice", Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_killed_edge_has_its_users_marked_offline() {
    let mut w = World::start().await;
    w.connect("bob", "bob", 1).await;
    w.connect("alice", "alice", 0).await;
    assert_eq!(w.driver.event_about("bob", "user:online", "alice").await["userId"], "alice");
    let killed = std::time::Instant::now();
    w.edges[0].signal(Signal::SIGKILL);
    let offline = w.driver.event_about("bob", "user:offline", "alice").await;
    assert_eq!(offline["userId"], "alice");
    assert!(killed.elapsed() < Duration::from_secs(30), "{:?}", killed.elapsed());
}

#[tokio::test]
async fn a_presence_worker_restart_sends_nothing_false_and_keeps_reporting() {
    let mut w = World::start().await;
    w.connect("bob", "bob", 1).await;
    w.connect("alice", "alice", 0).await;
    assert_eq!(w.driver.event("bob", "user:online").await["userId"], "alice");

    // bob's own online may still be on its way to alice: let it arrive before counting.
    w.driver.events_until_quiet("alice", "user:online", Duration::from_millis(500)).await;
    w.presence.signal(Signal::SIGTERM);
    assert_eq!(w.presence.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    let restarted = w.env.spawn_ready(Bin::Presence, &CLOCKS).await;
    w.warm(&restarted).await;
    for client in ["alice", "bob"] {
        for event in ["user:online", "user:offline"] {
            w.driver.no_event(client, event, Duration::from_millis(300)).await;
        }
    }
    w.driver.disconnect("alice").await;
    assert_eq!(w.driver.event_about("bob", "user:offline", "alice").await["userId"], "alice");
    w.presence = restarted;
}

#[tokio::test]
async fn an_edge_cut_off_from_the_broker_for_a_moment_causes_no_false_events() {
    let mut w = World::start().await;
    w.connect("bob", "bob", 1).await;
    w.connect("alice", "alice", 0).await;
    w.driver.event_about("bob", "user:online", "alice").await;
    // Close edge 0's connections from the broker's side, as an operator (or a network blip)
    // would; it reconnects on its own within a second or so.
    let pid = w.edges[0].pid();
    let names: Vec<String> =
        eventually("edge 0's connections to be listed", Duration::from_secs(15), || async {
            let connections = w.env.rabbit.connections(&w.env.vhost).await;
            let names: Vec<String> = connections
                .iter()
                .filter(|c| {
                    c["client_properties"]["connection_name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(&format!("pid {pid}")))
                })
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect();
            (!names.is_empty()).then_some(names)
        })
        .await;
    for name in &names {
        w.env.rabbit.close_connection(name).await;
    }
    w.edges[0].wait_readyz(200, Duration::from_secs(15)).await;
    w.driver.no_event_about("bob", "user:offline", "alice", Duration::from_millis(3000)).await;
    w.driver.no_event_about("bob", "user:online", "alice", Duration::from_millis(10)).await;
    // And presence still works for alice afterwards.
    w.driver.disconnect("alice").await;
    w.driver.event_about("bob", "user:offline", "alice").await;
}

#[tokio::test]
async fn after_their_conversation_closes_two_users_no_longer_see_each_other() {
    let mut w = World::start().await;
    w.connect("bob", "bob", 1).await;
    w.connect("alice", "alice", 0).await;
    w.driver.event_about("bob", "user:online", "alice").await;
    let reply = w.driver.emit_ack("bob", "presence:query", json!({ "userIds": ["alice"] })).await;
    assert_eq!(reply["users"]["alice"]["online"], true, "{reply}");

    // The unmatch closes the conversation through its owner (issue 6 does this over the bus).
    let db = w.env.db().await;
    let (conversation,): (uuid::Uuid,) = sqlx::query_as(
        "SELECT conversation_id FROM conversation_participants WHERE user_id = 'alice' LIMIT 1",
    )
    .fetch_one(&db)
    .await
    .expect("alice's conversation");
    let bus = w.env.bus("test-unmatch").await;
    let close = switchboard::contract::bus::CloseConversation {
        conversation_id: switchboard::contract::ConversationId(conversation),
    };
    bus.request(&close, Duration::from_secs(5)).await.expect("closed");

    let reply = w.driver.emit_ack("bob", "presence:query", json!({ "userIds": ["alice"] })).await;
    assert_eq!(reply, json!({ "success": true, "users": {} }));
    w.driver.disconnect("alice").await;
    w.driver.no_event_about("bob", "user:offline", "alice", Duration::from_millis(2500)).await;
    bus.close().await;
}

/// Issue 16: right after the system starts, the presence worker is warming up (two report
/// intervals); users who connect then are still announced, at once.
#[tokio::test]
async fn contacts_who_connect_right_after_the_system_starts_see_each_other_online() {
    let env = TestEnv::new().await;
    // The default report interval (5 s), so the warm-up (11 s) outlasts what this test waits.
    let clocks = [("PRESENCE_OFFLINE_GRACE_MS", "1000")];
    let _messages = env.spawn_ready(Bin::Messages, &clocks).await;
    let _presence = env.spawn_ready(Bin::Presence, &clocks).await;
    let edge = env.spawn_ready(Bin::Edge, &clocks).await;
    for user in ["alice", "bob"] {
        env.add_session(&format!("{user}-token"), user, HOUR).await;
    }
    env.create_conversation(&edge, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    driver.connect("bob", &edge.url(), as_user("bob")).await.expect("bob connects");
    driver.connect("alice", &edge.url(), as_user("alice")).await.expect("alice connects");
    let online = driver
        .wait_for_within("user:online about alice", Duration::from_secs(5), |l| {
            l["client"] == "bob" && l["event"] == "user:online" && l["args"][0]["userId"] == "alice"
        })
        .await
        .expect("bob hears that alice is online within 5 s of her connect");
    assert!(online["args"][0]["at"].as_str().is_some(), "{online}");
    // Once: the reports that follow (and the end of the warm-up) add nothing.
    driver.no_event_about("bob", "user:online", "alice", Duration::from_millis(1000)).await;
    driver.no_event("alice", "user:offline", Duration::from_millis(10)).await;
}

/// Issue 16: a standby presence worker that takes over (single-active-consumer) and hears a
/// user's last socket close before any report about them still takes them offline.
#[tokio::test]
async fn after_a_failover_a_user_who_leaves_goes_offline() {
    let mut w = World::start().await;
    // The edges report every 5 s, so no report about alice reaches the new worker between the
    // failover and her leaving.
    let slow_reports = [("PRESENCE_REPORT_INTERVAL_MS", "5000"), ("PRESENCE_OFFLINE_GRACE_MS", "1000")];
    let (e1, e2) = tokio::join!(
        w.env.spawn_ready(Bin::Edge, &slow_reports),
        w.env.spawn_ready(Bin::Edge, &slow_reports)
    );
    w.edges = vec![e1, e2];
    w.connect("bob", "bob", 1).await;
    w.connect("alice", "alice", 0).await;
    assert_eq!(w.driver.event_about("bob", "user:online", "alice").await["userId"], "alice");

    // A second copy stands by (the first holds the queue), long enough to be warm.
    let standby = w.env.spawn_ready(Bin::Presence, &CLOCKS).await;
    eventually("the standby to subscribe", Duration::from_secs(15), || async {
        let queues = w.env.rabbit.queues(&w.env.vhost).await;
        let events = queues.iter().find(|q| q["name"] == "presence.events")?;
        (events["consumers"] == 2).then_some(())
    })
    .await;
    w.warm(&standby).await;

    w.presence.signal(Signal::SIGKILL);
    w.driver.disconnect("alice").await;
    let offline = w.driver.event_about("bob", "user:offline", "alice").await;
    assert_eq!(offline["userId"], "alice");
    assert!(offline["lastSeenAt"].as_str().is_some(), "{offline}");
    w.driver.no_event_about("bob", "user:offline", "alice", Duration::from_millis(1500)).await;
    w.presence = standby;
}

/// Issue 16: two users who are online and get a conversation by a match learn each other's
/// presence at once.
#[tokio::test]
async fn two_online_users_who_match_see_each_other_online() {
    let mut w = World::start().await;
    let notifier = w.env.spawn_ready(Bin::Notifier, &CLOCKS).await;
    // alice and carol share no conversation yet.
    w.connect("carol", "carol", 1).await;
    w.connect("alice", "alice", 0).await;
    w.driver.no_event_about("carol", "user:online", "alice", Duration::from_millis(1000)).await;

    let post = json!({ "matchId": "m-presence", "userIds": ["alice", "carol"] });
    assert_eq!(w.edges[0].post("/api/v1/matches", post).await.0, 202);
    w.driver.event("alice", "match:new").await;
    let about_carol = w.driver.event_about("alice", "user:online", "carol").await;
    let about_alice = w.driver.event_about("carol", "user:online", "alice").await;
    assert!(about_carol["at"].as_str().is_some() && about_alice["at"].as_str().is_some());
    w.driver.no_event_about("alice", "user:online", "carol", Duration::from_millis(1000)).await;
    w.driver.no_event_about("carol", "user:online", "alice", Duration::from_millis(10)).await;
    // From now on they are contacts like any others.
    w.driver.disconnect("carol").await;
    assert_eq!(w.driver.event_about("alice", "user:offline", "carol").await["userId"], "carol");
    // Issue 17: after this traffic through every binary, all they export is documented.
    for process in [&w.edges[0], &w.edges[1], &w.presence, &w.messages, &notifier] {
        switchboard_tests::assert_metrics_documented(process).await;
    }
}

/// Presence asks for the contacts of every user a round announces in one query: each user
/// asked is answered, with an empty list when they share no open conversation, and a query
/// past the limit is refused as `invalid`, not cut short.
#[tokio::test]
async fn one_contacts_query_answers_every_user_asked() {
    use switchboard::contract::{
        ErrorCode, UserId,
        bus::{Contacts, ContactsQuery},
    };
    let w = World::start().await;
    let bus = w.env.bus("test-contacts").await;
    let ids = |names: &[&str]| -> Vec<UserId> { names.iter().map(|n| n.parse().expect("valid")).collect() };

    let query = ContactsQuery { user_ids: ids(&["alice", "bob", "carol", "dave"]) };
    let Contacts { mut contacts } = bus.request(&query, Duration::from_secs(5)).await.expect("answered");
    for list in contacts.values_mut() {
        list.sort();
    }
    let expected = [
        ("alice", ids(&["bob"])),
        ("bob", ids(&["alice", "carol"])),
        ("carol", ids(&["bob"])),
        ("dave", ids(&[])),
    ];
    assert_eq!(
        contacts,
        expected.into_iter().map(|(user, list)| (user.parse().expect("valid"), list)).collect()
    );

    let too_many = ContactsQuery {
        user_ids: (0..=ContactsQuery::MAX_USERS).map(|i| format!("u{i}").parse().expect("valid")).collect(),
    };
    match bus.request(&too_many, Duration::from_secs(5)).await {
        Err(switchboard::bus::RequestError::Refused(error)) => assert_eq!(error.code, ErrorCode::Invalid),
        other => panic!("expected invalid, got {other:?}"),
    }
    bus.close().await;
}
