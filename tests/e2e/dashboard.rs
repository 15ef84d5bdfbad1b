//! The Grafana dashboard (issue 17): every query of `deploy/grafana/switchboard.json` names a
//! metric the binaries export. Checked three ways: the name is in docs/metrics.md with a type
//! that fits how the query uses it, a live scrape of the four binaries after traffic through
//! each of them shows it, and (for the few metrics only a fault records) the code records it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::{
    bus::{Shard, topology},
    contract::ConversationId,
};
use switchboard_tests::{Bin, Driver, Running, TestEnv, eventually, raw_envelope};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/switchboard.json");
const METRICS_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");

/// Metrics recorded only on a fault this test does not cause (an overloaded shard, a lost
/// broker, a failed publish, a command that outlived its deadline): absent from a healthy
/// scrape. For these the code is searched for the call that records them instead.
const ONLY_ON_FAULTS: [&str; 4] = [
    "edge_chat_refused_total",
    "edge_deliveries_resumed_total",
    "bus_publish_errors_total",
    "messages_expired_total",
];

/// PromQL words that are neither metrics nor followed by a parenthesis in every use.
const KEYWORDS: [&str; 24] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// Keywords whose parenthesised list that follows holds label names.
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression selects: identifiers outside label matchers, ranges,
/// strings and label lists, not followed by `(` (functions) and not keywords. Grafana's
/// variables (`$job`, `${DS}`, `$__rate_interval`) are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips from an opening bracket to its closing one, over strings.
    let skip_group = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    let quote = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != quote {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => i = skip_group(i, '{', '}'),
            '[' => i = skip_group(i, '[', ']'),
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(i, '{', '}');
                } else {
                    while i < chars.len() && is_part(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (`5m`, `1e3`, `0.99`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_start(c) => {
                let start = i;
                while i < chars.len() && is_part(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if chars.get(next) == Some(&'(') {
                        i = skip_group(next, '(', ')');
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || chars.get(next) == Some(&'(') {
                    // An aggregation, a function or an operator.
                } else if !["inf", "nan"].contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every PromQL expression of the dashboard: its panels' targets (rows' nested panels too) and
/// its query variables, with where each comes from.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((format!("panel {title:?}"), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let query =
                variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
            // `label_values(metric{...}, label)`: its first argument is a selector.
            let selector = query.strip_prefix("label_values(").unwrap_or(query);
            let selector = selector.split([',', ')']).next().unwrap_or_default();
            out.push((format!("variable {}", variable["name"]), selector.to_owned()));
        }
    }
    out
}

/// docs/metrics.md's tables: name to type.
fn documented() -> BTreeMap<String, String> {
    let docs = std::fs::read_to_string(METRICS_DOC).expect("docs/metrics.md");
    docs.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), (*cells.get(2)?).to_owned()))
        })
        .collect()
}

/// The family a selected series belongs to: itself, or a histogram's for `_bucket`, `_sum`
/// and `_count`. `Err` says what is wrong with the name.
fn family(name: &str, types: &BTreeMap<String, String>) -> Result<String, String> {
    match types.get(name).map(String::as_str) {
        Some("histogram") => Err(format!("{name} is a histogram: select its _bucket, _sum or _count series")),
        Some(_) => Ok(name.to_owned()),
        None => {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix)
                    && types.get(base).map(String::as_str) == Some("histogram")
                {
                    return Ok(base.to_owned());
                }
            }
            Err(format!("{name} is not a metric of docs/metrics.md"))
        }
    }
}

/// The families a binary exports now, with their types.
async fn scrape(process: &Running) -> BTreeMap<String, String> {
    let (status, text) = process.get("/metrics").await;
    assert_eq!(status, 200, "{} /metrics", process.bin.name());
    text.lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("# TYPE ")?.split(' ');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Whether the code records `name` (a `counter!`, `gauge!` or `histogram!` call outside the
/// `describe_*!` of a `telemetry` module).
fn recorded_in_code(name: &str) -> bool {
    fn walk(dir: &std::path::Path, needle: &str) -> bool {
        std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, needle)
            } else {
                path.extension().is_some_and(|e| e == "rs")
                    && path.file_name().is_some_and(|f| f != "telemetry.rs")
                    && std::fs::read_to_string(&path).is_ok_and(|text| text.contains(needle))
            }
        })
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["counter", "gauge", "histogram"].iter().any(|kind| {
        let needle = format!("{kind}!(\"{name}\"");
        walk(&root.join("bins"), &needle) || walk(&root.join("shared/src"), &needle)
    })
}

#[test]
fn dashboard_queries_are_tokenized_into_metric_names() {
    let expr = r#"histogram_quantile(0.99, sum by (le, event) (rate(edge_event_duration_seconds_bucket{job=~"$job", event="a b"}[$__rate_interval]))) / on (instance) group_left (binary) switchboard_build_info offset 5m > bool 1e3"#;
    assert_eq!(metric_names(expr), ["edge_event_duration_seconds_bucket", "switchboard_build_info"]);
    assert_eq!(
        metric_names("time() - process_start_time_seconds{instance=~\"${instance}\"}"),
        ["process_start_time_seconds"]
    );
    let types = documented();
    assert_eq!(family("messages_batch_size_bucket", &types), Ok("messages_batch_size".into()));
    assert!(family("messages_batch_size", &types).is_err(), "a bare histogram selects nothing");
    assert!(family("messages_stored_total_bucket", &types).is_err());
    assert!(family("messages_stored", &types).is_err());
}

/// Traffic through every binary, so that what the dashboard shows has been recorded: chat,
/// refused connections, a request nothing serves, a match, an unmatch, a notification for an offline user, a dead letter, a send the
/// database refuses, presence announcements, a handshake over the per-address budget.
async fn traffic(env: &TestEnv) -> Vec<Running> {
    let clocks = [("PRESENCE_REPORT_INTERVAL_MS", "500"), ("PRESENCE_OFFLINE_GRACE_MS", "1000")];
    let edge_env = [clocks[0], clocks[1], ("HANDSHAKE_RATE_PER_SEC", "1"), ("HANDSHAKE_BURST", "20")];
    let (edge, presence, notifier) = tokio::join!(
        env.spawn_ready(Bin::Edge, &edge_env),
        env.spawn_ready(Bin::Presence, &clocks),
        env.spawn_ready(Bin::Notifier, &clocks)
    );
    for user in ["alice", "bob"] {
        env.add_session(&format!("{user}-token"), user, chrono::Duration::hours(1)).await;
    }
    let mut driver = Driver::start().await;
    let as_user = |token: &str| json!({ "transports": ["websocket"], "auth": { "token": token } });
    for (client, token) in [("a", "alice-token"), ("b", "bob-token")] {
        driver.connect(client, &edge.url(), as_user(token)).await.unwrap_or_else(|e| panic!("{client}: {e}"));
    }
    // Refused twice: the second time from the edge's memory of the first.
    for client in ["x1", "x2"] {
        assert!(driver.connect(client, &edge.url(), as_user("no-such-token")).await.is_err());
    }
    // Before any messages worker ran, no queue serves a join: the broker returns the request.
    let join = json!({ "conversationId": uuid::Uuid::now_v7() });
    let reply = driver.emit_ack("a", "conversation:join", join).await;
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");

    let messages = env.spawn_ready(Bin::Messages, &clocks).await;
    eventually("the presence worker to warm up", Duration::from_secs(15), || async {
        presence.get("/metrics").await.1.lines().any(|l| l == "presence_warm 1").then_some(())
    })
    .await;
    let conversation = env.create_conversation(&edge, &["alice", "bob"]).await;
    driver.event_about("b", "user:online", "alice").await;

    let send = |content: &str| json!({ "conversationId": conversation, "content": content });
    for i in 0..3 {
        let reply = driver.emit_ack("a", "message:send", send(&format!("m{i}"))).await;
        assert_eq!(reply["success"], true, "{reply}");
    }
    driver.event("b", "message:new").await;
    // A command the database refuses (a constraint of this test's), and one nobody can read.
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT test_no_poison CHECK (content <> 'poison')")
        .execute(&env.db().await)
        .await
        .expect("add the constraint");
    let reply = driver.emit_ack("a", "message:send", send("poison")).await;
    assert_eq!(reply["error"]["code"], "invalid", "{reply}");
    let id: ConversationId = conversation.parse().expect("a conversation id");
    let shard = Shard::of(id).key();
    let unreadable = raw_envelope("message.send", json!({ "conversationId": conversation }));
    env.publish_raw(topology::EVENTS_TOPIC, &shard, "message.send", &unreadable).await;

    // A match with a user who is not connected, then the unmatch.
    let post = json!({ "matchId": "m-dashboard", "userIds": ["alice", "carol"] });
    assert_eq!(edge.post("/api/v1/matches", post).await.0, 202);
    driver.event("a", "match:new").await;
    let delete = reqwest::Method::DELETE;
    let key = Some(switchboard_tests::INGRESS_KEY);
    assert_eq!(edge.call(delete, "/api/v1/matches/m-dashboard", key, None).await.0, 202);
    driver.event("a", "match:removed").await;

    // A notification for a user with no socket: the delivery no queue takes is returned.
    let note = json!({ "userId": "carol", "type": "system", "title": "Hello", "message": "Welcome" });
    assert_eq!(edge.post("/api/v1/notifications", note).await.0, 202);

    // Handshakes from one address until the budget answers 429.
    let handshake = format!("{}/socket.io/?EIO=4&transport=polling", edge.url());
    eventually("a handshake refused", Duration::from_secs(10), || async {
        (reqwest::get(&handshake).await.ok()?.status().as_u16() == 429).then_some(())
    })
    .await;
    vec![edge, messages, presence, notifier]
}

#[tokio::test]
async fn every_dashboard_query_names_a_metric_the_binaries_export() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard")).expect("JSON");
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource", "a datasource variable first");
    let types = documented();
    let mut used = BTreeMap::<String, BTreeSet<String>>::new();
    for (place, expr) in expressions(&dashboard) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            let family = family(&name, &types).unwrap_or_else(|e| panic!("{place}: {e}\n  in {expr}"));
            used.entry(family).or_default().insert(place.clone());
        }
    }
    assert!(used.len() >= 40, "the dashboard shows most metrics: {:?}", used.keys());
    for name in ONLY_ON_FAULTS {
        assert!(used.contains_key(name), "{name} is no longer on the dashboard: drop it from ONLY_ON_FAULTS");
    }

    let env = TestEnv::new().await;
    let processes = traffic(&env).await;
    let expected = used.keys().filter(|name| !ONLY_ON_FAULTS.contains(&name.as_str())).cloned();
    let expected: BTreeSet<String> = expected.collect();
    // Some counters are recorded a moment after the traffic (receipts, dead letters).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let exported = loop {
        let mut exported = BTreeMap::new();
        for process in &processes {
            exported.extend(scrape(process).await);
        }
        if expected.iter().all(|name| exported.contains_key(name)) || tokio::time::Instant::now() >= deadline
        {
            break exported;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (name, places) in &used {
        match exported.get(name) {
            Some(kind) => {
                assert_eq!(Some(kind), types.get(name), "{name}: exported and documented types differ")
            }
            None => assert!(
                ONLY_ON_FAULTS.contains(&name.as_str()) && recorded_in_code(name),
                "{name} (used by {places:?}) is not exported by any binary{}",
                if ONLY_ON_FAULTS.contains(&name.as_str()) { ", and no code records it" } else { "" }
            ),
        }
    }
}
