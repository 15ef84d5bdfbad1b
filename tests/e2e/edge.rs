//! The socket edge (issue 3): authentication, the origin check, per-user delivery across two
//! edges, bindings that follow sockets, validation and limits, the ingress, broker loss, and
//! shutdown. Every client is the official socket.io-client.

use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, Running, TestEnv, eventually};

const HOUR: chrono::Duration = chrono::Duration::hours(1);

fn token(user: &str) -> String {
    format!("{user}-token")
}

/// Options for a client that authenticates with `auth.token`.
fn as_user(user: &str, transport: &str) -> Value {
    json!({ "transports": [transport], "auth": { "token": token(user) } })
}

async fn sessions(env: &TestEnv, users: &[&str]) {
    for user in users {
        env.add_session(&token(user), user, HOUR).await;
    }
}

#[tokio::test]
async fn database_sessions_from_cookie_auth_token_or_bearer_and_refusals() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("AUTH_COOKIE_NAME", "sid")]).await;
    env.add_session("valid", "alice", HOUR).await;
    env.add_session("expired", "bob", chrono::Duration::seconds(-5)).await;
    let mut driver = Driver::start().await;
    let url = edge.url();

    for (name, options) in [
        ("none", json!({ "transports": ["websocket"] })),
        ("unknown", json!({ "transports": ["websocket"], "auth": { "token": "nope" } })),
        ("expired", json!({ "transports": ["websocket"], "auth": { "token": "expired" } })),
        (
            "wrong cookie name",
            json!({ "transports": ["polling"], "extraHeaders": { "cookie": "session_token=valid" } }),
        ),
        (
            "not bearer",
            json!({ "transports": ["polling"], "extraHeaders": { "authorization": "Basic valid" } }),
        ),
    ] {
        assert_eq!(driver.connect(name, &url, options).await, Err("unauthorized".into()), "{name}");
    }
    for (name, options) in [
        (
            "cookie",
            json!({ "transports": ["websocket"], "extraHeaders": { "cookie": "theme=dark; sid=valid" } }),
        ),
        ("auth.token", json!({ "transports": ["polling"], "auth": { "token": "valid" } })),
        (
            "bearer",
            json!({ "transports": ["websocket"], "extraHeaders": { "authorization": "Bearer valid" } }),
        ),
    ] {
        assert!(driver.connect(name, &url, options).await.is_ok(), "{name}");
        assert_eq!(driver.event(name, "session").await["userId"], "alice", "{name}");
    }
    // The cookie wins over auth.token: a bad cookie is not rescued by a good auth.token.
    let both = json!({ "transports": ["websocket"], "extraHeaders": { "cookie": "sid=nope" }, "auth": { "token": "valid" } });
    assert_eq!(driver.connect("both", &url, both).await, Err("unauthorized".into()));
    // A refusal is remembered for a while: see
    // `a_refused_token_is_remembered_so_trying_it_again_costs_no_query`.
}

#[tokio::test]
async fn jwt_mode_accepts_valid_tokens_and_refuses_forged_expired_or_incomplete_ones() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let env = TestEnv::new().await;
    let secret = JWT_SECRET;
    let edge = env.spawn_ready(Bin::Edge, &[("AUTH_MODE", "jwt"), ("AUTH_JWT_SECRET", secret)]).await;
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value, key: &str| {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(key.as_bytes())).expect("sign")
    };
    let mut driver = Driver::start().await;
    let cases = [
        ("valid", sign(json!({ "sub": "alice", "exp": now + 600 }), secret), true),
        (
            "forged",
            sign(json!({ "sub": "alice", "exp": now + 600 }), "another-secret-of-at-least-32-bytes"),
            false,
        ),
        ("expired", sign(json!({ "sub": "alice", "exp": now - 600 }), secret), false),
        ("no exp", sign(json!({ "sub": "alice" }), secret), false),
        ("bad sub", sign(json!({ "sub": "not valid!", "exp": now + 600 }), secret), false),
        ("garbage", "not.a.jwt".to_owned(), false),
    ];
    for (name, jwt, accepted) in cases {
        let result = driver
            .connect(name, &edge.url(), json!({ "transports": ["websocket"], "auth": { "token": jwt } }))
            .await;
        if accepted {
            assert!(result.is_ok(), "{name}: {result:?}");
            assert_eq!(driver.event(name, "session").await["userId"], "alice");
        } else {
            assert_eq!(result, Err("unauthorized".into()), "{name}");
        }
    }
}

/// A JWT secret of the 32 bytes the edge asks for at least.
const JWT_SECRET: &str = "jwt-test-secret-jwt-test-secret!";

#[tokio::test]
async fn jwt_mode_checks_nbf_and_the_audience_only_when_one_is_configured() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let env = TestEnv::new().await;
    let jwt = [("AUTH_MODE", "jwt"), ("AUTH_JWT_SECRET", JWT_SECRET)];
    let with_audience = [jwt[0], jwt[1], ("AUTH_JWT_AUDIENCE", "chat, admin")];
    let (any_audience, audience) =
        tokio::join!(env.spawn_ready(Bin::Edge, &jwt), env.spawn_ready(Bin::Edge, &with_audience));
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value| {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).expect("sign")
    };
    let exp = now + 600;
    let cases = [
        (&any_audience, "nbf passed", json!({ "sub": "alice", "exp": exp, "nbf": now - 60 }), true),
        (&any_audience, "nbf to come", json!({ "sub": "alice", "exp": exp, "nbf": now + 60 }), false),
        (&any_audience, "any aud", json!({ "sub": "alice", "exp": exp, "aud": "elsewhere" }), true),
        (&any_audience, "aud list", json!({ "sub": "alice", "exp": exp, "aud": ["a", "b"] }), true),
        (&audience, "listed aud", json!({ "sub": "alice", "exp": exp, "aud": "admin" }), true),
        (&audience, "aud list naming one", json!({ "sub": "alice", "exp": exp, "aud": ["x", "chat"] }), true),
        (&audience, "other aud", json!({ "sub": "alice", "exp": exp, "aud": "elsewhere" }), false),
        (&audience, "no aud", json!({ "sub": "alice", "exp": exp }), false),
        (
            &audience,
            "nbf to come",
            json!({ "sub": "alice", "exp": exp, "aud": "chat", "nbf": now + 60 }),
            false,
        ),
    ];
    let mut driver = Driver::start().await;
    for (i, (edge, name, claims, accepted)) in cases.into_iter().enumerate() {
        let client = format!("{i}: {name}");
        let options = json!({ "transports": ["websocket"], "auth": { "token": sign(claims) } });
        let result = driver.connect(&client, &edge.url(), options).await;
        if accepted {
            assert!(result.is_ok(), "{client}: {result:?}");
            assert_eq!(driver.event(&client, "session").await["userId"], "alice", "{client}");
        } else {
            assert_eq!(result, Err("unauthorized".into()), "{client}");
        }
    }
}

#[tokio::test]
async fn a_jwt_secret_shorter_than_32_bytes_stops_the_edge_with_64() {
    let env = TestEnv::new().await;
    let mut vars = env.base_env();
    vars.push(("AUTH_MODE".into(), "jwt".into()));
    vars.push(("AUTH_JWT_SECRET".into(), "only-31-bytes-of-jwt-secret-123".into()));
    let (status, output) = Running::run_to_exit(Bin::Edge, &vars, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(64), "{output:?}");
    assert_eq!(
        output,
        ["switchboard-edge: invalid configuration: AUTH_JWT_SECRET: must be at least 32 bytes"]
    );
}

#[tokio::test]
async fn a_handshake_from_a_foreign_origin_is_refused_on_both_transports() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("ALLOWED_ORIGINS", "https://app.example.com")]).await;
    sessions(&env, &["alice"]).await;
    let mut driver = Driver::start().await;
    for transport in ["websocket", "polling"] {
        let mut foreign = as_user("alice", transport);
        foreign["extraHeaders"] = json!({ "origin": "https://evil.example.com" });
        assert!(driver.connect("foreign", &edge.url(), foreign).await.is_err(), "{transport}");
        let mut listed = as_user("alice", transport);
        listed["extraHeaders"] = json!({ "origin": "https://app.example.com" });
        assert!(driver.connect("listed", &edge.url(), listed).await.is_ok(), "{transport}");
        assert!(
            driver.connect("no-origin", &edge.url(), as_user("alice", transport)).await.is_ok(),
            "{transport}"
        );
    }
    let client = reqwest::Client::new();
    let status = client
        .get(format!("{}/socket.io/?EIO=4&transport=polling", edge.url()))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .expect("answer")
        .status();
    assert_eq!(status.as_u16(), 403);
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_so_a_browser_can_long_poll() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/socket.io/?EIO=4&transport=polling", edge.url());

    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("answer");
    assert_eq!(preflight.status().as_u16(), 204);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(header(&preflight, "access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(header(&preflight, "access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(header(&preflight, "access-control-allow-methods").as_deref(), Some("GET, POST"));
    assert_eq!(header(&preflight, "access-control-allow-headers").as_deref(), Some("content-type"));

    // The handshake itself (a polling GET) carries them too, and still opens a session.
    let open = client.get(&url).header("origin", "https://app.example.com").send().await.expect("answer");
    assert_eq!(open.status().as_u16(), 200);
    assert_eq!(header(&open, "access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(header(&open, "access-control-allow-credentials").as_deref(), Some("true"));
    assert!(open.text().await.expect("body").starts_with("0{"), "an engine.io open packet");

    // A foreign origin gets neither a session nor CORS headers.
    let foreign = client.get(&url).header("origin", "https://evil.example.com").send().await.expect("answer");
    assert_eq!(foreign.status().as_u16(), 403);
    assert_eq!(header(&foreign, "access-control-allow-origin"), None);
}

/// The CORS headers of a response (and `vary`), sorted, as `name: value`.
fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    let mut headers: Vec<String> = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-") || name.as_str() == "vary")
        .map(|(name, value)| format!("{name}: {}", value.to_str().expect("ascii")))
        .collect();
    headers.sort();
    headers
}

#[tokio::test]
async fn any_origin_gets_cors_without_credentials_and_listed_origins_keep_them() {
    let env = TestEnv::new().await;
    let (any, listed) = tokio::join!(
        env.spawn_ready(Bin::Edge, &[]),
        env.spawn_ready(Bin::Edge, &[("ALLOWED_ORIGINS", "https://app.example.com")]),
    );
    let client = reqwest::Client::new();
    let handshake = |edge: &Running, origin: &str| {
        client.get(format!("{}/socket.io/?EIO=4&transport=polling", edge.url())).header("origin", origin)
    };
    let preflight = |edge: &Running, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{}/socket.io/?EIO=4&transport=polling", edge.url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
    };

    // Under `*`, any page may long-poll, but the browser is never told it may do so with the
    // user's cookie.
    let open = handshake(&any, "https://evil.example").send().await.expect("answer");
    assert_eq!(open.status().as_u16(), 200);
    assert_eq!(cors_headers(&open), ["access-control-allow-origin: *"]);
    assert!(open.text().await.expect("body").starts_with("0{"), "an engine.io open packet");
    let asked = preflight(&any, "https://evil.example").send().await.expect("answer");
    assert_eq!(asked.status().as_u16(), 204);
    assert_eq!(
        cors_headers(&asked),
        [
            "access-control-allow-headers: content-type",
            "access-control-allow-methods: GET, POST",
            "access-control-allow-origin: *",
            "access-control-max-age: 600",
        ]
    );

    // A listed origin is echoed, with credentials.
    let open = handshake(&listed, "https://app.example.com").send().await.expect("answer");
    assert_eq!(open.status().as_u16(), 200);
    assert_eq!(
        cors_headers(&open),
        [
            "access-control-allow-credentials: true",
            "access-control-allow-origin: https://app.example.com",
            "vary: origin",
        ]
    );
    let asked = preflight(&listed, "https://app.example.com").send().await.expect("answer");
    assert_eq!(asked.status().as_u16(), 204);
    assert_eq!(
        cors_headers(&asked),
        [
            "access-control-allow-credentials: true",
            "access-control-allow-headers: content-type",
            "access-control-allow-methods: GET, POST",
            "access-control-allow-origin: https://app.example.com",
            "access-control-max-age: 600",
            "vary: origin",
        ]
    );
    let refused = preflight(&listed, "https://evil.example").send().await.expect("answer");
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(cors_headers(&refused), Vec::<String>::new());

    // The operator is told at start, once, that `*` is in force; not when origins are listed.
    let warned = |edge: &Running| {
        edge.logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["level"] == "WARN")
            .filter(|line| line["message"].as_str().is_some_and(|m| m.starts_with("ALLOWED_ORIGINS=*")))
            .count()
    };
    assert_eq!(warned(&any), 1, "{:#?}", any.logs());
    assert_eq!(warned(&listed), 0, "{:#?}", listed.logs());
}

/// Two edges, the users connected to them, and a driver.
struct TwoEdges {
    env: TestEnv,
    edges: [Running; 2],
    driver: Driver,
}

impl TwoEdges {
    async fn start(users: &[&str]) -> TwoEdges {
        let env = TestEnv::new().await;
        let (a, b) = tokio::join!(env.spawn_ready(Bin::Edge, &[]), env.spawn_ready(Bin::Edge, &[]));
        sessions(&env, users).await;
        TwoEdges { env, edges: [a, b], driver: Driver::start().await }
    }

    async fn connect(&mut self, client: &str, user: &str, edge: usize, transport: &str) {
        let url = self.edges[edge].url();
        let result = self.driver.connect(client, &url, as_user(user, transport)).await;
        assert!(result.is_ok(), "{client} as {user} on edge {edge}: {result:?}");
    }

    /// Whether `user.direct` in the test vhost has a binding for `user`.
    async fn bound(&self, user: &str) -> usize {
        let bindings = self.env.rabbit.bindings(&self.env.vhost).await;
        bindings.iter().filter(|b| b["source"] == "user.direct" && b["routing_key"] == user).count()
    }
}

#[tokio::test]
async fn an_emit_to_a_user_reaches_all_their_sockets_on_both_edges_and_nobody_else() {
    let mut t = TwoEdges::start(&["alice", "bob"]).await;
    t.connect("alice-1", "alice", 0, "websocket").await;
    t.connect("alice-2", "alice", 1, "polling").await;
    t.connect("alice-3", "alice", 1, "websocket").await;
    t.connect("bob", "bob", 0, "websocket").await;

    let (status, body) = t.edges[0]
        .post("/api/v1/emit", json!({ "userId": "alice", "event": "ping", "data": { "n": 1 } }))
        .await;
    assert_eq!((status, body), (202, json!({})));
    for client in ["alice-1", "alice-2", "alice-3"] {
        assert_eq!(t.driver.event(client, "ping").await, json!({ "n": 1 }), "{client}");
    }
    // The same through a room name, from the other edge's ingress.
    let (status, _) =
        t.edges[1].post("/api/v1/emit", json!({ "room": "user:alice", "event": "ping", "data": [2] })).await;
    assert_eq!(status, 202);
    for client in ["alice-1", "alice-2", "alice-3"] {
        assert_eq!(t.driver.event(client, "ping").await, json!([2]), "{client}");
    }
    t.driver.no_event("bob", "ping", Duration::from_millis(500)).await;
    for client in ["alice-1", "alice-2", "alice-3"] {
        t.driver.no_event(client, "ping", Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_emit_right_after_connect_is_never_lost() {
    let mut t = TwoEdges::start(&["alice"]).await;
    for i in 0..200 {
        let client = format!("c{i}");
        t.connect(&client, "alice", i % 2, if i % 4 < 2 { "websocket" } else { "polling" }).await;
        let (status, _) = t.edges[(i + 1) % 2]
            .post("/api/v1/emit", json!({ "userId": "alice", "event": "hello", "data": i }))
            .await;
        assert_eq!(status, 202);
        assert_eq!(t.driver.event(&client, "hello").await, json!(i), "iteration {i}");
        t.driver.disconnect(&client).await;
    }
}

#[tokio::test]
async fn bindings_follow_the_sockets_on_each_edge() {
    let mut t = TwoEdges::start(&["alice"]).await;
    t.connect("alice-1", "alice", 0, "websocket").await;
    t.connect("alice-2", "alice", 1, "websocket").await;
    assert_eq!(t.bound("alice").await, 2, "one binding per edge");
    t.driver.disconnect("alice-1").await;
    eventually("edge 0 to unbind alice", Duration::from_secs(5), || async {
        (t.bound("alice").await == 1).then_some(())
    })
    .await;
    let (status, _) =
        t.edges[0].post("/api/v1/emit", json!({ "userId": "alice", "event": "still", "data": 1 })).await;
    assert_eq!(status, 202);
    assert_eq!(t.driver.event("alice-2", "still").await, json!(1));
    t.driver.disconnect("alice-2").await;
    eventually("every edge to unbind alice", Duration::from_secs(5), || async {
        (t.bound("alice").await == 0).then_some(())
    })
    .await;
}

/// Rooms bind in parallel (issue 15): users connecting together each get their own binding and
/// their own deliveries, and nobody else's.
#[tokio::test]
async fn users_connecting_at_once_each_get_their_binding_and_their_deliveries() {
    let users: Vec<String> = (0..60).map(|i| format!("crowd-{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut t = TwoEdges::start(&names).await;
    let url = t.edges[0].url();
    let clients: Vec<(String, Value)> = users.iter().map(|u| (u.clone(), as_user(u, "websocket"))).collect();
    let results = t.driver.connect_all(&url, &clients).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let bindings = t.env.rabbit.bindings(&t.env.vhost).await;
    let mut bound: Vec<String> = bindings
        .iter()
        .filter(|b| b["source"] == "user.direct")
        .filter_map(|b| b["routing_key"].as_str().map(str::to_owned))
        .collect();
    bound.sort();
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(bound, expected, "one binding per user, made before each connect");
    for (i, user) in users.iter().enumerate() {
        let (status, _) =
            t.edges[0].post("/api/v1/emit", json!({ "userId": user, "event": "yours", "data": i })).await;
        assert_eq!(status, 202);
    }
    for (i, user) in users.iter().enumerate() {
        assert_eq!(t.driver.event(user, "yours").await, json!(i), "{user}");
    }
    for user in &users {
        t.driver.no_event(user, "yours", Duration::from_millis(5)).await;
    }
}

/// A user's last socket leaving while their next one connects: the unbind and the bind reach
/// the broker in the order they were decided, so the new socket is never left unbound.
#[tokio::test]
async fn a_socket_replacing_its_users_last_one_keeps_the_binding() {
    let mut t = TwoEdges::start(&["alice"]).await;
    t.connect("alice-0", "alice", 0, "websocket").await;
    for i in 1..=40 {
        let (previous, client) = (format!("alice-{}", i - 1), format!("alice-{i}"));
        t.driver.start_disconnect(&previous).await;
        t.connect(&client, "alice", 0, "websocket").await;
        t.driver.disconnected(&previous).await;
        let (status, _) =
            t.edges[0].post("/api/v1/emit", json!({ "userId": "alice", "event": "hello", "data": i })).await;
        assert_eq!(status, 202);
        assert_eq!(t.driver.event(&client, "hello").await, json!(i), "iteration {i}");
    }
    eventually("one binding for alice's one socket", Duration::from_secs(5), || async {
        (t.bound("alice").await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_invalid_and_the_socket_keeps_working() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    sessions(&env, &["alice"]).await;
    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice", "websocket")).await.expect("connects");
    let invalid = |reply: &Value| reply["success"] == false && reply["error"]["code"] == "invalid";
    for (event, args) in [
        ("conversation:join", json!([])),
        ("conversation:join", json!(["a string"])),
        ("conversation:join", json!([{}])),
        ("conversation:join", json!([{ "conversationId": "not-a-uuid" }])),
        ("conversation:join", json!([{ "conversationId": 42 }])),
        ("conversation:join", json!([null])),
        ("no:such:event", json!([{}])),
    ] {
        let reply = driver.emit_ack("a", event, args.clone()).await;
        assert!(invalid(&reply), "{event} {args}: {reply}");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
    }
    // An unknown event without an ack is ignored; the socket is still connected and answers.
    driver.emit("a", "no:such:event", json!([1])).await;
    // No messages worker runs yet: a valid join is answered unavailable, at once.
    let started = std::time::Instant::now();
    let reply =
        driver.emit_ack("a", "conversation:join", json!({ "conversationId": uuid::Uuid::now_v7() })).await;
    assert_eq!(
        reply,
        json!({ "success": false, "error": { "code": "unavailable", "message": "service unavailable, try again" } })
    );
    assert!(started.elapsed() < Duration::from_secs(2), "unavailable should not wait for the timeout");
    let reply =
        driver.emit_ack("a", "conversation:leave", json!({ "conversationId": uuid::Uuid::now_v7() })).await;
    assert_eq!(reply, json!({ "success": true }));
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_the_socket_recovers() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("RATE_LIMIT_PER_SEC", "5"), ("RATE_LIMIT_BURST", "10")]).await;
    sessions(&env, &["alice"]).await;
    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice", "websocket")).await.expect("connects");
    let leave = json!({ "conversationId": uuid::Uuid::now_v7() });
    let mut codes = Vec::new();
    for _ in 0..30 {
        let reply = driver.emit_ack("a", "conversation:leave", leave.clone()).await;
        codes.push(if reply["success"] == true {
            "ok".to_owned()
        } else {
            reply["error"]["code"].as_str().unwrap_or("?").to_owned()
        });
    }
    assert!(codes[..10].iter().all(|c| c == "ok"), "the burst passes: {codes:?}");
    let limited = codes[10..].iter().filter(|c| *c == "rate_limited").count();
    assert!(limited >= 15, "the flood past the burst is limited: {codes:?}");
    // Tokens come back at 5 per second: the socket is served again shortly, without
    // reconnecting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let reply = driver.emit_ack("a", "conversation:leave", leave.clone()).await;
        if reply == json!({ "success": true }) {
            break;
        }
        assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
        assert!(tokio::time::Instant::now() < deadline, "still limited after 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("MAX_FRAME_BYTES", "4096")]).await;
    sessions(&env, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    for transport in ["websocket", "polling"] {
        driver.connect("big", &edge.url(), as_user("alice", transport)).await.expect("connects");
        driver.connect("bystander", &edge.url(), as_user("bob", "websocket")).await.expect("connects");
        driver.emit("big", "conversation:join", json!([{ "conversationId": "x".repeat(8192) }])).await;
        let reason = driver.disconnected("big").await;
        assert!(reason.starts_with("transport"), "{transport}: {reason}");
        // The bystander is untouched and keeps working.
        let reply = driver
            .emit_ack("bystander", "conversation:leave", json!({ "conversationId": uuid::Uuid::now_v7() }))
            .await;
        assert_eq!(reply, json!({ "success": true }));
        let (status, _) =
            edge.post("/api/v1/emit", json!({ "userId": "bob", "event": "ok", "data": 1 })).await;
        assert_eq!(status, 202);
        assert_eq!(driver.event("bystander", "ok").await, json!(1));
        // The sender may connect again and is served as usual.
        driver.connect("big", &edge.url(), as_user("alice", transport)).await.expect("reconnects");
        let reply = driver
            .emit_ack("big", "conversation:leave", json!({ "conversationId": uuid::Uuid::now_v7() }))
            .await;
        assert_eq!(reply, json!({ "success": true }));
        driver.disconnect("big").await;
        driver.disconnect("bystander").await;
    }
}

#[tokio::test]
async fn the_ingress_checks_keys_and_bodies() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("INGRESS_API_KEYS", "k1,k2")]).await;
    let good = r#"{"userId":"alice","event":"x","data":{}}"#;
    let post = reqwest::Method::POST;
    assert_eq!(edge.call(post.clone(), "/api/v1/emit", None, Some(good)).await.0, 401);
    assert_eq!(edge.call(post.clone(), "/api/v1/emit", Some("k3"), Some(good)).await.0, 401);
    assert_eq!(edge.call(post.clone(), "/api/v1/emit", Some("k2"), Some(good)).await, (202, json!({})));
    for bad in [
        "not json",
        r#"{"event":"x","data":{}}"#,
        r#"{"userId":"alice","room":"user:bob","event":"x"}"#,
        r#"{"userId":"alice"}"#,
        r#"{"userId":"alice","event":""}"#,
        r#"{"userId":"alice","event":"connect"}"#,
        r#"{"userId":"has space","event":"x"}"#,
        r#"{"room":"lobby","event":"x"}"#,
        r#"{"userId":"alice","event":"x","extra":1}"#,
    ] {
        let (status, body) = edge.call(post.clone(), "/api/v1/emit", Some("k1"), Some(bad)).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "invalid", "{bad}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
}

#[tokio::test]
async fn after_the_broker_closes_the_connection_the_edge_rebinds_and_delivers() {
    let mut t = TwoEdges::start(&["alice", "bob"]).await;
    t.connect("alice", "alice", 0, "websocket").await;
    t.connect("bob", "bob", 0, "polling").await;
    t.connect("bob-2", "bob", 1, "websocket").await;
    // The management API lists connections a moment after they open: wait until both edges'
    // are there (each names its connections after its pid).
    let pids = [t.edges[0].pid(), t.edges[1].pid()];
    let before: Vec<String> =
        eventually("both edges' connections to be listed", Duration::from_secs(15), || async {
            let connections = t.env.rabbit.connections(&t.env.vhost).await;
            let of = |pid: i32| {
                connections.iter().any(|c| {
                    c["client_properties"]["connection_name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(&format!("pid {pid}")))
                })
            };
            let names = connections.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect();
            pids.iter().all(|pid| of(*pid)).then_some(names)
        })
        .await;
    // Nothing was lost yet: no socket is told to catch up.
    t.driver.no_event("alice", "sync:required", Duration::from_millis(100)).await;
    for name in &before {
        t.env.rabbit.close_connection(name).await;
    }
    // Both edges come back with new connections, their queues re-declared and re-bound.
    eventually("the edges to re-bind their users", Duration::from_secs(20), || async {
        let connections = t.env.rabbit.connections(&t.env.vhost).await;
        let fresh = connections.iter().all(|c| !before.iter().any(|b| c["name"] == b.as_str()));
        let ready = t.edges[0].get("/readyz").await.0 == 200 && t.edges[1].get("/readyz").await.0 == 200;
        (fresh && ready && t.bound("alice").await == 1 && t.bound("bob").await == 2).then_some(())
    })
    .await;
    // What was routed to the old queues is gone with them: every socket is told to catch up,
    // once, with the moment deliveries stopped.
    let closed_at = chrono::Utc::now();
    for client in ["alice", "bob", "bob-2"] {
        let signal = t.driver.event(client, "sync:required").await;
        let since: chrono::DateTime<chrono::Utc> =
            signal["since"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{signal}"));
        assert!(since <= closed_at, "{client}: {signal}");
        t.driver.no_event(client, "sync:required", Duration::from_millis(300)).await;
    }
    for (user, clients) in [("alice", vec!["alice"]), ("bob", vec!["bob", "bob-2"])] {
        let (status, _) =
            t.edges[1].post("/api/v1/emit", json!({ "userId": user, "event": "after", "data": user })).await;
        assert_eq!(status, 202);
        for client in clients {
            assert_eq!(t.driver.event(client, "after").await, json!(user), "{client}");
        }
    }
}

#[tokio::test]
async fn sigterm_announces_the_users_closes_sockets_and_deletes_the_queue() {
    let env = TestEnv::new().await;
    let mut edge = env.spawn_ready(Bin::Edge, &[("SHUTDOWN_GRACE_MS", "3000")]).await;
    sessions(&env, &["alice", "bob"]).await;
    // Listen for edge.stopping the way presence will.
    let mut stopping = env.listen("edge.stopping").await;

    let mut driver = Driver::start().await;
    driver.connect("alice", &edge.url(), as_user("alice", "websocket")).await.expect("connects");
    driver.connect("bob", &edge.url(), as_user("bob", "polling")).await.expect("connects");
    let queues_before = env.rabbit.queues(&env.vhost).await;
    assert!(queues_before.iter().any(|q| q["name"].as_str().is_some_and(|n| n.starts_with("edge."))));

    edge.signal(Signal::SIGTERM);
    for client in ["alice", "bob"] {
        let reason = driver.disconnected(client).await;
        assert!(
            ["io server disconnect", "transport close", "transport error"].contains(&reason.as_str()),
            "{client}: {reason}"
        );
    }
    let status = edge.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0));

    let (_, body) = stopping.next_within(Duration::from_secs(5)).await.expect("edge.stopping arrives");
    assert_eq!(body["kind"], "edge.stopping");
    let mut users: Vec<String> = body["data"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u.as_str().unwrap_or_default().to_owned())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    let queues_after = env.rabbit.queues(&env.vhost).await;
    assert!(
        !queues_after.iter().any(|q| q["name"].as_str().is_some_and(|n| n.starts_with("edge."))),
        "{queues_after:?}"
    );
}

#[tokio::test]
async fn a_rust_backend_emits_through_the_library_and_metrics_count_it_all() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    sessions(&env, &["alice"]).await;
    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice", "websocket")).await.expect("connects");
    assert_eq!(
        driver.connect("anon", &edge.url(), json!({ "transports": ["websocket"] })).await,
        Err("unauthorized".into())
    );

    let bus = env.bus("test-backend").await;
    let alice = "alice".parse().expect("valid");
    switchboard::backend::emit_to_user(&bus, &alice, "from:rust", json!({ "ok": true }))
        .await
        .expect("emitted");
    assert_eq!(driver.event("a", "from:rust").await, json!({ "ok": true }));
    let room = "user:alice".parse().expect("valid");
    switchboard::backend::emit_to_room(&bus, &room, "from:rust", json!(2)).await.expect("emitted");
    assert_eq!(driver.event("a", "from:rust").await, json!(2));
    assert!(
        switchboard::backend::emit_to_user(&bus, &alice, "connect", json!(null)).await.is_err(),
        "reserved name"
    );
    let reply =
        driver.emit_ack("a", "conversation:leave", json!({ "conversationId": uuid::Uuid::now_v7() })).await;
    assert_eq!(reply, json!({ "success": true }));

    let (_, metrics) = edge.get("/metrics").await;
    for series in [
        "edge_sockets_connected 1",
        "edge_connects_total 1",
        "edge_connect_refused_total{reason=\"unauthorized\"} 1",
        "edge_events_in_total{event=\"conversation:leave\"} 1",
        "edge_acks_total{event=\"conversation:leave\",result=\"ok\"} 1",
        "edge_events_out_total{event=\"other\"} 2",
        "edge_delivery_latency_seconds_count 2",
        "bus_consumed_total{queue=\"edge\"} 2",
    ] {
        assert!(metrics.lines().any(|line| line == series), "missing {series:?} in:\n{metrics}");
    }
    bus.close().await;
}

#[tokio::test]
async fn backend_event_names_past_the_servers_own_share_one_metric_series() {
    use switchboard::contract::server::{self, MatchRemoved, ServerEvent};
    const NAMES: usize = 10_000;
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    sessions(&env, &["alice"]).await;
    let mut driver = Driver::start().await;
    // The edge only consumes deliveries for users with a socket on it.
    driver.connect("a", &edge.url(), as_user("alice", "websocket")).await.expect("connects");

    let bus = env.bus("test-backend").await;
    let alice: switchboard::contract::UserId = "alice".parse().expect("valid");
    // Ten thousand names of the backend's own, and one of the server's.
    let names = (0..NAMES).map(|i| format!("custom:{i}")).chain([MatchRemoved::NAME.to_owned()]);
    futures::stream::iter(names)
        .map(|name| {
            let (bus, alice) = (&bus, &alice);
            async move { switchboard::backend::emit_to_user(bus, alice, &name, json!({})).await }
        })
        .buffer_unordered(64)
        .for_each(|emitted| async move { emitted.expect("emitted") })
        .await;

    // Waits for the deliveries whatever their labels, then looks at the labels.
    let out_series = |metrics: &str| -> Vec<String> {
        metrics.lines().filter(|line| line.starts_with("edge_events_out_total{")).map(str::to_owned).collect()
    };
    let mut series = eventually("the edge to deliver every event", Duration::from_secs(60), || async {
        let series = out_series(&edge.get("/metrics").await.1);
        let delivered: u64 =
            series.iter().filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
        (delivered == NAMES as u64 + 1).then_some(series)
    })
    .await;
    assert!(
        series.len() <= server::NAMES.len() + 1,
        "{} series of edge_events_out_total, such as {:#?}",
        series.len(),
        &series[..5]
    );
    series.sort();
    assert_eq!(
        series,
        [
            "edge_events_out_total{event=\"match:removed\"} 1".to_owned(),
            format!("edge_events_out_total{{event=\"other\"}} {NAMES}"),
        ]
    );
    bus.close().await;
}

/// A raw Engine.IO websocket (see [`raw_engine_io`]).
type RawSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The edge's Engine.IO websocket, opened without Socket.IO: its `open` packet read, nothing sent.
async fn raw_engine_io(edge: &Running) -> RawSocket {
    use futures::StreamExt;
    let url = format!("{}/socket.io/?EIO=4&transport=websocket", edge.url().replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("a websocket");
    let open = ws.next().await.expect("the open packet").expect("readable");
    assert!(open.to_text().expect("text").starts_with("0{"), "{open:?}");
    ws
}

/// How long until the server closes `ws` (its Engine.IO `close` packet, a websocket close or
/// the end of the stream), reading whatever else it sends meanwhile.
async fn closed_after(ws: &mut RawSocket, started: std::time::Instant, limit: Duration) -> Duration {
    use futures::StreamExt;
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), ws.next()).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => {
                return started.elapsed();
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) if text.as_str() == "1" => {
                return started.elapsed();
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn before_authentication_a_binary_packet_or_a_missing_connect_closes_the_connection() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("CONNECT_TIMEOUT_MS", "1500")]).await;

    // A binary event with 150 attachments announced before any CONNECT: the contract has no
    // binary payloads, and the attachments are not gathered (they would be, up to 10 MB, until
    // the last one came); the connection closes at once.
    let mut ws = raw_engine_io(&edge).await;
    let started = std::time::Instant::now();
    ws.send(Message::text(r#"45150-["upload",{"_placeholder":true,"num":0}]"#)).await.expect("sent");
    for _ in 0..20 {
        if ws.send(Message::binary(vec![0u8; 60_000])).await.is_err() {
            break;
        }
    }
    let closed = closed_after(&mut ws, started, Duration::from_secs(1)).await;
    assert!(closed < Duration::from_secs(1), "{closed:?}");

    // A connection that never sends its CONNECT lives CONNECT_TIMEOUT_MS, not longer.
    let mut ws = raw_engine_io(&edge).await;
    let started = std::time::Instant::now();
    let closed = closed_after(&mut ws, started, Duration::from_secs(5)).await;
    assert!((Duration::from_millis(1400)..Duration::from_secs(4)).contains(&closed), "{closed:?}");

    // An ordinary client is not affected.
    env.add_session("alice-token", "alice", chrono::Duration::hours(1)).await;
    let mut driver = Driver::start().await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": "alice-token" } });
    driver.connect("a", &edge.url(), options).await.expect("connects");
    assert_eq!(driver.event("a", "session").await["userId"], "alice");
}

#[tokio::test]
async fn a_cached_session_is_forgotten_at_its_own_expiry() {
    let env = TestEnv::new().await;
    // A cache TTL far longer than the session: the session's expiry must win.
    let edge = env.spawn_ready(Bin::Edge, &[("AUTH_CACHE_TTL_MS", "60000")]).await;
    env.add_session("brief-token", "alice", chrono::Duration::milliseconds(1500)).await;
    let url = edge.url();
    let options = json!({ "transports": ["websocket"], "auth": { "token": "brief-token" } });
    let mut driver = Driver::start().await;
    driver.connect("first", &url, options.clone()).await.expect("connects while the session is valid");
    // Cached now; a second connect within the session's life is served from the cache.
    driver.connect("second", &url, options.clone()).await.expect("still valid");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(driver.connect("late", &url, options).await, Err("unauthorized".into()));
}

#[tokio::test]
async fn one_user_has_at_most_max_sockets_per_user_on_an_edge() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("MAX_SOCKETS_PER_USER", "2")]).await;
    env.add_session("alice-token", "alice", chrono::Duration::hours(1)).await;
    env.add_session("bob-token", "bob", chrono::Duration::hours(1)).await;
    let url = edge.url();
    let as_user =
        |user: &str| json!({ "transports": ["websocket"], "auth": { "token": format!("{user}-token") } });
    let mut driver = Driver::start().await;
    driver.connect("a1", &url, as_user("alice")).await.expect("first");
    driver.connect("a2", &url, as_user("alice")).await.expect("second");
    assert_eq!(driver.connect("a3", &url, as_user("alice")).await, Err("too_many_connections".into()));
    // Another user is not affected, and a place freed is a place to take.
    driver.connect("b1", &url, as_user("bob")).await.expect("bob");
    driver.disconnect("a1").await;
    eventually("alice's place freed", Duration::from_secs(5), || async {
        let mut probe = Driver::start().await;
        probe.connect("a4", &url, as_user("alice")).await.ok()
    })
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_while_being_admitted_leaves_no_binding_behind() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let env = TestEnv::new().await;
    // A session lookup that takes a second, so the client can leave while it runs.
    let slow =
        "SELECT user_id, expires_at FROM sessions, pg_sleep(1) WHERE token = $1 AND expires_at > now()";
    let edge = env.spawn_ready(Bin::Edge, &[("AUTH_SESSION_QUERY", slow)]).await;
    env.add_session("alice-token", "alice", chrono::Duration::hours(1)).await;
    let mut ws = raw_engine_io(&edge).await;
    ws.send(Message::text(r#"40{"token":"alice-token"}"#)).await.expect("CONNECT sent");
    eventually("the session lookup running", Duration::from_secs(5), || async {
        let running = env
            .count(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state = 'active' AND query LIKE '%pg_sleep(1)%' AND pid <> pg_backend_pid()",
            )
            .await;
        (running > 0).then_some(())
    })
    .await;
    drop(ws);
    // The lookup ends and the binding is made for a socket that is gone; then it is undone.
    let bound = || async {
        let bindings = env.rabbit.bindings(&env.vhost).await;
        bindings.iter().filter(|b| b["source"] == "user.direct" && b["routing_key"] == "alice").count()
    };
    eventually("alice bound once the lookup ended", Duration::from_secs(5), || async {
        (bound().await == 1).then_some(())
    })
    .await;
    eventually("alice unbound", Duration::from_secs(5), || async { (bound().await == 0).then_some(()) })
        .await;
    let metrics = edge.get("/metrics").await.1;
    assert!(metrics.lines().any(|l| l == "edge_sockets_connected 0"), "{metrics}");
}

#[tokio::test]
async fn a_request_nobody_serves_is_answered_unavailable_and_counted_not_logged_with_its_body() {
    // No messages worker ever ran: no queue serves membership, and the broker returns the
    // mandatory request. lapin would warn with the whole body; the bus counts it instead.
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("RUST_LOG", "info")]).await;
    sessions(&env, &["alice"]).await;
    let mut driver = Driver::start().await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": "alice-token" } });
    driver.connect("a", &edge.url(), options).await.expect("alice connects");
    let conversation = uuid::Uuid::now_v7();
    let reply = driver.emit_ack("a", "conversation:join", json!({ "conversationId": conversation })).await;
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let metrics = edge.get("/metrics").await.1;
    let returned: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("bus_returned_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(returned, 1.0, "{metrics}");
    let logs = edge.logs().join("\n");
    assert!(!logs.contains("returned us a message"), "lapin's warning is shown: {logs}");
    assert!(!logs.contains(&conversation.to_string()), "the body reached the log: {logs}");
}

/// Sends a Socket.IO CONNECT to namespace `/` with `auth.token` on a raw Engine.IO websocket.
async fn send_connect(ws: &mut RawSocket, token: &str) {
    use futures::SinkExt;
    let packet = format!("40{}", json!({ "token": token }));
    ws.send(tokio_tungstenite::tungstenite::Message::text(packet)).await.expect("CONNECT sent");
}

/// The next Socket.IO packet on a raw websocket that `wanted` accepts (pings are answered,
/// other packets skipped), within 10 s.
async fn next_packet(ws: &mut RawSocket, wanted: impl Fn(&str) -> bool) -> String {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a packet within 10 s")
            .expect("the socket is open")
            .expect("readable");
        let Message::Text(text) = message else { continue };
        if text.as_str() == "2" {
            ws.send(Message::text("3")).await.expect("pong sent");
        } else if wanted(text.as_str()) {
            return text.as_str().to_owned();
        }
    }
}

/// The answer to the CONNECT sent on `ws`: `Ok(sid)` for CONNECT, `Err(message)` for
/// CONNECT_ERROR.
async fn connect_answer(ws: &mut RawSocket) -> Result<String, String> {
    let packet = next_packet(ws, |p| p.starts_with("40") || p.starts_with("44")).await;
    let body: Value = serde_json::from_str(&packet[2..]).expect("JSON after the packet type");
    if packet.starts_with("40") {
        Ok(body["sid"].as_str().expect("a sid").to_owned())
    } else {
        Err(body["message"].as_str().expect("a message").to_owned())
    }
}

/// The value of the series `name` (with its labels, as printed) in the edge's `/metrics`.
async fn metric(edge: &Running, name: &str) -> Option<f64> {
    let metrics = edge.get("/metrics").await.1;
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn handshakes_that_arrive_during_a_session_lookup_share_the_next_query() {
    let env = TestEnv::new().await;
    // One query at a time, and the first one (for `slow-token`) takes a while, so the
    // handshakes behind it wait together.
    let slow = "SELECT user_id, expires_at FROM sessions, \
                pg_sleep(CASE WHEN $1 = 'slow-token' THEN 2 ELSE 0 END) \
                WHERE token = $1 AND expires_at > now()";
    let edge =
        env.spawn_ready(Bin::Edge, &[("AUTH_SESSION_QUERY", slow), ("AUTH_LOOKUPS_IN_FLIGHT", "1")]).await;
    env.add_session("slow-token", "slow", HOUR).await;
    const WAITING: usize = 10;
    for i in 0..WAITING {
        env.add_session(&format!("u{i}-token"), &format!("u{i}"), HOUR).await;
    }
    let mut first = raw_engine_io(&edge).await;
    send_connect(&mut first, "slow-token").await;
    eventually("the first lookup to start", Duration::from_secs(5), || async {
        (metric(&edge, "edge_session_lookups_total").await == Some(1.0)).then_some(())
    })
    .await;
    let mut others = Vec::new();
    for i in 0..WAITING {
        let mut ws = raw_engine_io(&edge).await;
        send_connect(&mut ws, &format!("u{i}-token")).await;
        others.push(ws);
    }
    // All of them wait: the one query slot is taken.
    eventually("every other handshake to wait for a lookup", Duration::from_secs(5), || async {
        (metric(&edge, "edge_session_lookups_waiting").await == Some(WAITING as f64)).then_some(())
    })
    .await;
    assert!(connect_answer(&mut first).await.is_ok());
    for (i, ws) in others.iter_mut().enumerate() {
        assert!(connect_answer(ws).await.is_ok(), "u{i}");
        let session = next_packet(ws, |p| p.starts_with(r#"42["session""#)).await;
        assert!(session.contains(&format!(r#""userId":"u{i}""#)), "{session}");
    }
    // Eleven handshakes, two queries: the first alone, the ten others together.
    assert_eq!(metric(&edge, "edge_session_lookups_total").await, Some(2.0));
    assert_eq!(metric(&edge, "edge_session_lookup_tokens_total").await, Some(1.0 + WAITING as f64));
    assert_eq!(metric(&edge, "edge_session_lookups_waiting").await, Some(0.0));
}

#[tokio::test]
async fn a_session_query_that_cannot_be_batched_is_run_once_per_token() {
    let env = TestEnv::new().await;
    // A data-modifying WITH may only stand at the top of a statement, so this query cannot
    // run inside the batched one.
    let touching = "WITH seen AS (UPDATE sessions SET expires_at = expires_at \
                    WHERE token = $1 AND expires_at > now() RETURNING user_id, expires_at) \
                    SELECT user_id, expires_at FROM seen";
    let edge = env.spawn_ready(Bin::Edge, &[("AUTH_SESSION_QUERY", touching)]).await;
    sessions(&env, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    for user in ["alice", "bob"] {
        driver.connect(user, &edge.url(), as_user(user, "websocket")).await.expect("connects");
        assert_eq!(driver.event(user, "session").await["userId"], user);
    }
    let nope = json!({ "transports": ["websocket"], "auth": { "token": "nope" } });
    assert_eq!(driver.connect("nope", &edge.url(), nope).await, Err("unauthorized".into()));
    // The batched statement once (refused), then each token alone.
    assert_eq!(metric(&edge, "edge_session_lookups_total").await, Some(4.0));
    let warned = edge.logs().iter().filter(|l| l.contains("cannot be run for many tokens at once")).count();
    assert_eq!(warned, 1, "{:#?}", edge.logs());
}

#[tokio::test]
async fn a_refused_token_is_remembered_so_trying_it_again_costs_no_query() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("AUTH_REFUSAL_TTL_MS", "1500")]).await;
    let url = edge.url();
    let nope = json!({ "transports": ["websocket"], "auth": { "token": "nope" } });
    let mut driver = Driver::start().await;
    for i in 0..5 {
        assert_eq!(driver.connect("nope", &url, nope.clone()).await, Err("unauthorized".into()), "try {i}");
    }
    assert_eq!(metric(&edge, "edge_session_lookups_total").await, Some(1.0));
    assert_eq!(metric(&edge, "edge_session_refusals_remembered_total").await, Some(4.0));
    // A session created for that token now is refused until the refusal is forgotten, then
    // accepted.
    env.add_session("nope", "carol", HOUR).await;
    assert_eq!(driver.connect("nope", &url, nope.clone()).await, Err("unauthorized".into()));
    assert_eq!(metric(&edge, "edge_session_lookups_total").await, Some(1.0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Err(refused) = driver.connect("nope", &url, nope.clone()).await {
        assert_eq!(refused, "unauthorized");
        assert!(tokio::time::Instant::now() < deadline, "still refused after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(driver.event("nope", "session").await["userId"], "carol");
    assert_eq!(metric(&edge, "edge_session_lookups_total").await, Some(2.0));
}

#[tokio::test]
async fn handshakes_and_connects_from_one_address_share_a_budget() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[("HANDSHAKE_RATE_PER_SEC", "1"), ("HANDSHAKE_BURST", "3")]).await;
    sessions(&env, &["alice"]).await;
    // A handshake and a CONNECT: two of three.
    let mut ws = raw_engine_io(&edge).await;
    send_connect(&mut ws, &token("alice")).await;
    assert!(connect_answer(&mut ws).await.is_ok());
    // The third handshake passes; its CONNECT finds the budget spent, before any lookup.
    let mut second = raw_engine_io(&edge).await;
    send_connect(&mut second, &token("alice")).await;
    assert_eq!(connect_answer(&mut second).await, Err("rate_limited".into()));
    // And a handshake now is answered 429 before Socket.IO sees it.
    let handshake = format!("{}/socket.io/?EIO=4&transport=polling", edge.url());
    let refused = reqwest::get(&handshake).await.expect("an answer");
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(
        refused.json::<Value>().await.expect("JSON"),
        json!({ "error": { "code": "rate_limited", "message": "too many connection attempts from this address" } })
    );
    // Another address has a budget of its own.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("a client");
    let open = elsewhere.get(&handshake).send().await.expect("an answer");
    assert_eq!(open.status().as_u16(), 200);
    assert!(open.text().await.expect("a body").starts_with("0{"), "an engine.io open packet");
    // The budget comes back at HANDSHAKE_RATE_PER_SEC.
    eventually("the budget to refill", Duration::from_secs(5), || async {
        (reqwest::get(&handshake).await.ok()?.status().as_u16() == 200).then_some(())
    })
    .await;
    let metrics = edge.get("/metrics").await.1;
    assert!(
        metrics.lines().any(|l| l == r#"edge_connect_refused_total{reason="rate_limited"} 1"#),
        "{metrics}"
    );
    // The connected socket is untouched.
    drop(second);
    send_event(&mut ws, 1, "conversation:leave", json!({ "conversationId": uuid::Uuid::now_v7() })).await;
    assert_eq!(ack_of(&mut ws, 1).await, json!({ "success": true }));
}

/// Emits `event` with ack id `id` on a raw, connected websocket.
async fn send_event(ws: &mut RawSocket, id: u64, event: &str, payload: Value) {
    use futures::SinkExt;
    let packet = format!("42{id}{}", json!([event, payload]));
    ws.send(tokio_tungstenite::tungstenite::Message::text(packet)).await.expect("event sent");
}

/// The reply of the ack numbered `id` on a raw websocket.
async fn ack_of(ws: &mut RawSocket, id: u64) -> Value {
    let prefix = format!("43{id}[");
    let packet = next_packet(ws, |p| p.starts_with(&prefix)).await;
    let replies: Value = serde_json::from_str(&packet[prefix.len() - 1..]).expect("JSON replies");
    replies[0].clone()
}

#[tokio::test]
async fn one_users_sockets_share_an_event_budget_on_an_edge() {
    let env = TestEnv::new().await;
    let edge = env
        .spawn_ready(
            Bin::Edge,
            &[
                ("RATE_LIMIT_PER_SEC", "5"),
                ("RATE_LIMIT_BURST", "10"),
                ("USER_RATE_LIMIT_PER_SEC", "1"),
                ("USER_RATE_LIMIT_BURST", "12"),
            ],
        )
        .await;
    sessions(&env, &["alice", "bob"]).await;
    let mut driver = Driver::start().await;
    for (client, user) in [("a1", "alice"), ("a2", "alice"), ("b", "bob")] {
        driver.connect(client, &edge.url(), as_user(user, "websocket")).await.expect("connects");
    }
    let leave = json!({ "conversationId": uuid::Uuid::now_v7() });
    let codes = |replies: Vec<Value>| -> Vec<String> {
        replies
            .iter()
            .map(|r| if r["success"] == true { "ok" } else { r["error"]["code"].as_str().unwrap_or("?") })
            .map(str::to_owned)
            .collect()
    };
    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(driver.emit_ack("a1", "conversation:leave", leave.clone()).await);
    }
    // One socket's burst, within the user's.
    assert_eq!(codes(replies), ["ok"; 10]);
    // The user's second socket has a burst of its own, but the user's budget has two left.
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(driver.emit_ack("a2", "conversation:leave", leave.clone()).await);
    }
    assert_eq!(codes(replies), ["ok", "ok", "rate_limited", "rate_limited", "rate_limited"]);
    // Another user is not affected.
    assert_eq!(driver.emit_ack("b", "conversation:leave", leave.clone()).await, json!({ "success": true }));
}

#[tokio::test]
async fn an_event_sent_the_moment_connect_arrives_is_answered() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    sessions(&env, &["alice"]).await;
    // The client answers CONNECT at once with an event, before the edge's own task for the
    // new socket (`on_connect`) has surely run; many times, since it is a race.
    for i in 0..50 {
        let mut ws = raw_engine_io(&edge).await;
        send_connect(&mut ws, &token("alice")).await;
        assert!(connect_answer(&mut ws).await.is_ok(), "try {i}");
        send_event(&mut ws, 7, "conversation:leave", json!({ "conversationId": uuid::Uuid::now_v7() })).await;
        assert_eq!(ack_of(&mut ws, 7).await, json!({ "success": true }), "try {i}");
    }
}

#[tokio::test]
async fn requests_that_time_out_leave_nothing_waiting() {
    // A worker declared its queues and went away: requests wait in the queue and their callers
    // time out. Each caller's place among those waiting for a reply must go with it, or the
    // edge would keep one route per timed-out request for ever.
    let env = TestEnv::new().await;
    let mut worker = env.spawn_ready(Bin::Messages, &[]).await;
    // Created through an edge with the usual timeout: a worker that has just started can take
    // longer than 300 ms over its first request on a busy machine.
    let setup = env.spawn_ready(Bin::Edge, &[]).await;
    let conversation = env.create_conversation(&setup, &["alice", "bob"]).await;
    drop(setup);
    let edge = env.spawn_ready(Bin::Edge, &[("ACK_TIMEOUT_MS", "300")]).await;
    sessions(&env, &["alice"]).await;
    worker.signal(Signal::SIGTERM);
    worker.wait_exit(Duration::from_secs(15)).await;
    let mut driver = Driver::start().await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": "alice-token" } });
    driver.connect("a", &edge.url(), options).await.expect("alice connects");
    let waiting = || async {
        let metrics = edge.get("/metrics").await.1;
        metrics
            .lines()
            .find(|l| l.starts_with("bus_requests_waiting "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let syncs = (0..10).map(|_| json!({ "conversationId": conversation, "afterSeq": 0 })).collect();
    let replies = driver.emit_ack_many("a", "messages:sync", syncs).await;
    let codes: Vec<&Value> = replies.iter().map(|r| &r["error"]["code"]).collect();
    assert_eq!(codes, vec![&json!("timeout"); 10], "{replies:?}");
    assert_eq!(waiting().await, Some(0.0), "routes left behind by timed-out requests");
}
