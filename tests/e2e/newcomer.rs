//! A newcomer's first hour, as one test (issue 17, "Done when"). The README's two commands set
//! things up: the binaries run with deploy/dev's settings (`deploy/dev-settings.sh`, which
//! deploy/dev sources too) and get the demo sessions from the SQL deploy/dev runs. Then the
//! README's "Trying it" calls, taken from README.md itself and run with curl in the order it
//! gives them, each checked against the answer the README or docs/reference.md (Ingress) documents
//! and against the events it causes on alice's and bob's sockets, connected the way the README
//! connects a client. Then the demo page in Chromium (`clients/typescript/e2e/demo.mjs
//! --rematch`): a match, a message each way, an unmatch and a re-match. Last, the binaries are
//! stopped as deploy/dev's Ctrl-C stops them, and not one of them logged a line at WARN or ERROR
//! from its start to its stop: what a newcomer sees in the terminal is never alarming.
//!
//! When the README drifts from what the system does, this test fails and names the call.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use switchboard_tests::{Bin, Driver, Running, TestEnv};
use tokio::process::Command;

use crate::browser::{CHROMIUM, DemoServer, artifacts_dir, kit_dir, require};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Where deploy/dev's edge listens, as the README's calls and its `io(...)` name it.
const README_EDGE: &str = "localhost:3001";

/// The settings deploy/dev starts the binaries with, for a demo page on `demo_port`: what
/// `deploy/dev-settings.sh` exports, less what this test's own world sets (its database, vhost,
/// ports and address) and `LOG_FORMAT` (deploy/dev's terminal gets pretty lines; these are read
/// by level, so JSON).
fn dev_settings(demo_port: u16) -> Vec<(String, String)> {
    let output = std::process::Command::new("bash")
        .args(["-c", "set -euo pipefail; . deploy/dev-settings.sh; env -0"])
        .current_dir(repo())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DEMO_PORT", demo_port.to_string())
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "sourcing deploy/dev-settings.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let own =
        ["DATABASE_URL", "RABBITMQ_VHOST", "LISTEN_HOST", "WEBSOCKET_PORT", "METRICS_PORT", "LOG_FORMAT"];
    // TEST_RUST_LOG, when set, asks for more output than deploy/dev's.
    let keep_rust_log = std::env::var_os("TEST_RUST_LOG").is_none();
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .split('\0')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| {
            (switchboard::config::KEYS.contains(key) && !own.contains(key))
                || (*key == "RUST_LOG" && keep_rust_log)
        })
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// The SQL deploy/dev runs once the workers are ready: the demo sessions.
fn dev_sessions_sql() -> String {
    let script = read("deploy/dev");
    let (_, sql) =
        script.split_once("<<'SQL'\n").expect("deploy/dev adds the demo sessions with psql <<'SQL'");
    let (sql, _) = sql.split_once("\nSQL\n").expect("the SQL heredoc ends");
    sql.to_owned()
}

/// A port nothing listens on now, for the demo page: the edge must know the page's origin
/// before the page's server, which needs the edge's address, starts.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// One call of the README's "Trying it" block: the command as written (continuation lines
/// joined) and the comment above it.
struct Call {
    command: String,
    comment: String,
}

/// The "Trying it" section of the README.
fn trying_it(readme: &str) -> &str {
    let start = readme.find("\n## Trying it\n").expect("README.md has a ## Trying it section");
    let end = readme[start + 1..].find("\n## ").map_or(readme.len(), |i| start + 1 + i);
    &readme[start..end]
}

/// The calls of the section's first `sh` block, in order.
fn readme_calls(section: &str) -> Vec<Call> {
    let (_, block) = section.split_once("```sh\n").expect("Trying it has a ```sh block");
    let (block, _) = block.split_once("```").expect("the block ends");
    let mut calls = Vec::new();
    let mut comment = String::new();
    let mut command = String::new();
    for line in block.lines() {
        let line = line.trim();
        if command.is_empty() && line.starts_with('#') {
            comment.push_str(line.trim_start_matches('#').trim());
            comment.push(' ');
            continue;
        }
        if line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                command.push_str(part.trim());
                command.push(' ');
            }
            None => {
                command.push_str(line);
                assert!(command.starts_with("curl "), "Trying it: not a curl call: {command}");
                calls.push(Call {
                    command: std::mem::take(&mut command),
                    comment: std::mem::take(&mut comment),
                });
            }
        }
    }
    assert!(command.is_empty(), "Trying it: a call ends with a continuation: {command}");
    calls
}

/// The URL and options of the section's `io("...", { ... })`, the options as JSON.
fn readme_io(section: &str) -> (String, Value) {
    let (_, call) =
        section.split_once("io(\"").expect("Trying it shows how a client connects: io(\"...\", ...)");
    let (url, rest) = call.split_once('"').expect("the URL ends");
    let url = url.to_owned();
    let rest = rest.trim_start().strip_prefix(',').expect("io(url, options)").trim_start();
    let options = &rest[..balanced(rest, '{', '}').expect("the options object closes")];
    let json = quote_keys(options);
    let options = serde_json::from_str(&json).unwrap_or_else(|e| panic!("io options {options}: {e}"));
    (url, options)
}

/// The length of the bracketed text `text` starts with, brackets included.
fn balanced(text: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i + c.len_utf8());
            }
        }
    }
    None
}

/// A JavaScript object literal with bare keys (`{ auth: { token: "x" } }`) as JSON.
fn quote_keys(literal: &str) -> String {
    let mut json = String::new();
    let mut chars = literal.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            json.push(c);
            for c in chars.by_ref() {
                json.push(c);
                if c == '"' {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = c.to_string();
            while let Some(&next) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                word.push(next);
                chars.next();
            }
            let is_key = chars.clone().find(|n| !n.is_whitespace()) == Some(':');
            json.push_str(&if is_key { format!("\"{word}\"") } else { word });
        } else {
            json.push(c);
        }
    }
    json
}

/// A success docs/reference.md (Ingress) documents: `POST /api/v1/matches` answers
/// `202 { matchId, conversationId }`.
struct Documented {
    method: String,
    path: String,
    status: u16,
    fields: Vec<String>,
}

fn documented_answers(reference: &str) -> Vec<Documented> {
    let start = reference.find("\n## Ingress\n").expect("docs/reference.md has ## Ingress");
    let mut answers = Vec::new();
    for row in reference[start..].lines().skip_while(|l| !l.starts_with("| request")).skip(2) {
        let Some(cells) = row.strip_prefix("| ") else { break };
        let cells: Vec<&str> = cells.split(" | ").collect();
        let (request, answer) = (cells[0].trim_matches('`'), cells[1]);
        let (method, path) = request.split_once(' ').expect("METHOD /path");
        let answer = answer.trim_start_matches('`');
        let answer = &answer[..answer.find('`').expect("the answer in backticks")];
        let (status, body) = answer.split_once(' ').expect("status { fields }");
        let fields = body.trim_matches(|c| c == '{' || c == '}' || c == ' ');
        answers.push(Documented {
            method: method.to_owned(),
            path: path.to_owned(),
            status: status.parse().unwrap_or_else(|_| panic!("a status in {row}")),
            fields: fields.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect(),
        });
    }
    assert!(answers.len() >= 5, "docs/reference.md's ingress table: {} rows", answers.len());
    answers
}

/// Whether `path` is one the template (`/api/v1/matches/{matchId}`) describes.
fn path_matches(template: &str, path: &str) -> bool {
    let (template, path): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len() && template.iter().zip(&path).all(|(t, p)| t == p || t.starts_with('{'))
}

/// The answer a call's comment gives, if any: "answers 202 {"matchId":"m-1",...}".
fn answer_in_comment(comment: &str) -> Option<(u16, Value)> {
    let (_, rest) = comment.split_once("answers ")?;
    let (status, rest) = rest.split_once(' ')?;
    let body = &rest[..balanced(rest, '{', '}')?];
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("the README's answer {body}: {e}"));
    Some((status.parse().ok()?, body))
}

/// Whether `actual` is the README's `expected`, where `"<uuid>"` stands for any UUID.
fn answer_is(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) if e == "<uuid>" => uuid::Uuid::parse_str(a).is_ok(),
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len() && e.iter().all(|(k, v)| a.get(k).is_some_and(|a| answer_is(v, a)))
        }
        _ => expected == actual,
    }
}

/// The parts of a curl call the checks need.
struct Request {
    method: String,
    path: String,
    body: Value,
}

fn request_of(command: &str) -> Request {
    let words: Vec<&str> = command.split_whitespace().collect();
    let method = words.iter().position(|w| *w == "-X").map_or("GET", |i| words[i + 1]).to_owned();
    let url = words.iter().find(|w| w.starts_with(README_EDGE)).expect("the URL");
    let body = command
        .split_once("-d '")
        .map(|(_, rest)| rest.split_once('\'').expect("the body's quote closes").0)
        .map_or(Value::Null, |body| serde_json::from_str(body).expect("the body is JSON"));
    Request { method, path: url[README_EDGE.len()..].to_owned(), body }
}

/// Runs a README call as written, against `edge` instead of deploy/dev's: the status and body.
async fn curl(command: &str, edge: &Running) -> (u16, Value) {
    let command = command.replace(README_EDGE, &edge.addr.to_string());
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{command} -w '\\n%{{http_code}}'"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("curl finishes within 20 s")
        .expect("run curl (is it installed?)");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(output.status.success(), "{command}: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    let (body, status) = stdout.rsplit_once('\n').expect("the status after the body");
    let body = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("a JSON body") };
    (status.parse().expect("a status"), body)
}

/// A JSON array of strings.
fn strings(array: &Value) -> Vec<String> {
    let array = array.as_array().unwrap_or_else(|| panic!("an array: {array}"));
    array.iter().map(|s| s.as_str().unwrap_or_else(|| panic!("a string: {s}")).to_owned()).collect()
}

/// Runs a README call and checks its answer against docs/reference.md (Ingress) and against
/// what its comment says it answers, if it says; returns what was asked and the answer.
async fn run_call(call: &Call, documented: &[Documented], edge: &Running) -> (Request, Value) {
    assert!(call.command.contains(README_EDGE), "{}: not to deploy/dev's edge", call.command);
    let request = request_of(&call.command);
    let doc = documented
        .iter()
        .find(|d| d.method == request.method && path_matches(&d.path, &request.path))
        .unwrap_or_else(|| panic!("docs/reference.md documents no {} {}", request.method, request.path));
    let (status, answer) = curl(&call.command, edge).await;
    let said = format!("the README's {} {} answered {status} {answer}", request.method, request.path);
    assert_eq!(status, doc.status, "{said}; docs/reference.md says {}", doc.status);
    let mut fields: Vec<&String> = answer.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    let mut want: Vec<&String> = doc.fields.iter().collect();
    fields.sort();
    want.sort();
    assert_eq!(fields, want, "{said}; docs/reference.md says {{ {} }}", doc.fields.join(", "));
    if let Some((status_said, body_said)) = answer_in_comment(&call.comment) {
        assert!(
            status == status_said && answer_is(&body_said, &answer),
            "{said}; the README says {status_said} {body_said}"
        );
    }
    (request, answer)
}

/// Each match the calls made, by matchId.
type Matches = BTreeMap<String, Match>;

struct Match {
    users: Vec<String>,
    conversation: String,
    /// Unmatched by a later call.
    removed: bool,
}

/// Checks what a call did beyond its answer: the events alice's and bob's sockets got, or what
/// was stored.
async fn check_effects(
    request: &Request,
    answer: &Value,
    env: &TestEnv,
    driver: &mut Driver,
    matches: &mut Matches,
) {
    let body = &request.body;
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/api/v1/conversations") => {
            let id = answer["conversationId"].as_str().expect("conversationId");
            let stored: Vec<(String,)> = sqlx::query_as(
                "SELECT user_id FROM conversation_participants WHERE conversation_id = $1::uuid ORDER BY user_id",
            )
            .bind(id)
            .fetch_all(&env.db().await)
            .await
            .expect("the participants");
            let mut participants = strings(&body["participants"]);
            participants.sort();
            assert_eq!(
                stored.into_iter().map(|(u,)| u).collect::<Vec<_>>(),
                participants,
                "its participants"
            );
        }
        ("POST", "/api/v1/emit") => {
            let user = body["userId"].as_str().expect("the README emits to a user");
            let event = body["event"].as_str().expect("event");
            assert_eq!(driver.event(user, event).await, body["data"], "{user}'s {event}");
        }
        ("POST", "/api/v1/matches") => {
            let users = strings(&body["userIds"]);
            let match_id = body["matchId"].as_str().expect("matchId");
            let conversation = answer["conversationId"].as_str().expect("conversationId").to_owned();
            for (me, other) in [(&users[0], &users[1]), (&users[1], &users[0])] {
                let new = driver.event(me, "match:new").await;
                assert_eq!(
                    (new["matchId"].as_str(), new["userId"].as_str(), new["conversationId"].as_str()),
                    (Some(match_id), Some(other.as_str()), Some(conversation.as_str())),
                    "{me}'s match:new: {new}"
                );
                let notification = driver.event(me, "notification:new").await;
                assert_eq!(notification["type"], "match", "{me}: {notification}");
                assert_eq!(notification["data"]["matchId"], match_id, "{me}: {notification}");
            }
            matches.insert(match_id.to_owned(), Match { users, conversation, removed: false });
        }
        ("POST", "/api/v1/notifications") => {
            let user = body["userId"].as_str().expect("userId");
            let notification = driver.event(user, "notification:new").await;
            assert_eq!(notification["id"], answer["id"], "{notification}");
            for field in ["type", "title", "message"] {
                assert_eq!(notification[field], body[field], "{user}'s notification: {notification}");
            }
        }
        ("DELETE", path) if path.starts_with("/api/v1/matches/") => {
            let match_id = &path["/api/v1/matches/".len()..];
            let Match { users, conversation, removed } =
                matches.get_mut(match_id).expect("the README unmatches a match it made");
            *removed = true;
            for user in users.iter() {
                let event = driver.event(user, "match:removed").await;
                assert_eq!(event, json!({ "matchId": match_id, "conversationId": conversation }), "{user}");
            }
            assert!(!is_open(env, conversation).await, "the unmatched conversation is still open");
        }
        (method, path) => panic!("the README calls {method} {path}: say here what it should do"),
    }
}

async fn is_open(env: &TestEnv, conversation: &str) -> bool {
    let sql = format!("SELECT count(*) FROM conversations WHERE id = '{conversation}' AND closed_at IS NULL");
    env.count(&sql).await == 1
}

/// The lines of a binary's log a newcomer would find alarming: WARN and ERROR, and anything that
/// is not a log line at all (a panic's message).
fn loud_lines(process: &Running) -> Vec<String> {
    process
        .logs()
        .into_iter()
        .filter(|line| match serde_json::from_str::<Value>(line) {
            Ok(json) => json["level"] == "WARN" || json["level"] == "ERROR",
            Err(_) => true,
        })
        .collect()
}

#[tokio::test]
async fn a_newcomer_follows_the_readme_and_the_demo_page_and_no_binary_warns() {
    require(PathBuf::from(CHROMIUM), "install it with `apt-get install chromium` (tests/run does)");
    let build = "run `npm ci && npm run build` in clients/typescript (tests/run does)";
    require(kit_dir().join("node_modules/playwright-core"), build);
    require(kit_dir().join("demo/dist/index.html"), build);

    // deploy/dev: every binary at once, with its settings; then, once they are ready, the demo
    // sessions; then the demo page.
    let env = TestEnv::new().await;
    let demo_port = free_port();
    let settings = dev_settings(demo_port);
    let setting = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let ingress_key = setting("INGRESS_API_KEYS").expect("deploy/dev enables the ingress");
    let ingress_key = ingress_key.split(',').next().expect("a key").to_owned();
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (edge, messages, presence, notifier) = tokio::join!(
        env.spawn(Bin::Edge, &extra),
        env.spawn(Bin::Messages, &extra),
        env.spawn(Bin::Presence, &extra),
        env.spawn(Bin::Notifier, &extra),
    );
    let mut running = [edge, messages, presence, notifier];
    for process in &running {
        process.wait_ready().await;
    }
    let sessions = dev_sessions_sql();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sessions.clone()))
        .execute(&env.db().await)
        .await
        .unwrap_or_else(|e| panic!("deploy/dev's demo sessions: {e}\n{sessions}"));
    let edge = &running[0];

    // "Trying it": alice and bob connected as the README connects a client, then every call.
    let readme = read("README.md");
    let section = trying_it(&readme);
    let (url, options) = readme_io(section);
    assert_eq!(url, format!("http://{README_EDGE}"), "the README's client connects to deploy/dev's edge");
    let token = options["auth"]["token"].as_str().expect("the README's client gives auth.token").to_owned();
    let mut driver = Driver::start().await;
    for user in ["alice", "bob"] {
        let session = format!("{user}-token");
        assert!(readme.contains(&format!("`{session}`")), "the README names the demo session {session}");
        let options = serde_json::from_str(&options.to_string().replace(&token, &session)).expect("JSON");
        driver.connect(user, &edge.url(), options).await.unwrap_or_else(|e| panic!("{user} connects: {e}"));
        assert_eq!(driver.event(user, "session").await["userId"], user);
    }
    let documented = documented_answers(&read("docs/reference.md"));
    let calls = readme_calls(section);
    assert!(calls.len() >= 5, "Trying it shows {} calls", calls.len());
    let mut matches = Matches::new();
    let mut first_answers = Vec::new();
    for call in &calls {
        let (request, answer) = run_call(call, &documented, edge).await;
        check_effects(&request, &answer, &env, &mut driver, &mut matches).await;
        first_answers.push(answer);
    }
    // A block made to be pasted gets pasted twice: every call answers as documented again, the
    // match as the first time ("the same every time"), and the removed match stays removed.
    for (call, first) in calls.iter().zip(&first_answers) {
        let (request, answer) = run_call(call, &documented, edge).await;
        if call.comment.contains("the same every time") {
            assert_eq!(&answer, first, "{} {} again", request.method, request.path);
        }
    }
    for (match_id, found) in matches.iter().filter(|(_, m)| m.removed) {
        assert!(!is_open(&env, &found.conversation).await, "match {match_id} was revived");
    }

    // The demo page, as deploy/dev serves it, after the README's calls.
    let demo = DemoServer::start_with(&edge.url(), &ingress_key, demo_port).await;
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("create target/artifacts");
    let screenshot = artifacts.join("newcomer.png");
    let run = Command::new("node")
        .arg("e2e/demo.mjs")
        .arg(&demo.url)
        .arg(&screenshot)
        .arg("--rematch")
        .current_dir(kit_dir())
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser run finishes within 120 s")
        .expect("run node e2e/demo.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo page failed in Chromium ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // What the page showed is what was stored: the first match's conversation closed with the
    // first two messages, the second open with the other two.
    let line =
        stdout.lines().find_map(|l| l.strip_prefix("matches: ")).expect("the script names the matches");
    let (first, second) = line.split_once(' ').expect("two matches");
    for (match_id, closed, texts) in [
        (first, true, ["Hi bob! Coffee at five?", "Sure, see you there."]),
        (second, false, ["Matched again: still on for five?", "Yes, same place."]),
    ] {
        let rows: Vec<(bool, String)> = sqlx::query_as(
            "SELECT c.closed_at IS NOT NULL, m.content FROM conversations c JOIN messages m \
             ON m.conversation_id = c.id WHERE c.match_id = $1 ORDER BY m.seq",
        )
        .bind(match_id)
        .fetch_all(&env.db().await)
        .await
        .expect("the match's messages");
        let want: Vec<(bool, String)> = texts.iter().map(|t| (closed, (*t).to_owned())).collect();
        assert_eq!(rows, want, "match {match_id}");
    }
    assert!(demo.output().is_empty(), "the demo server reported failures: {:#?}", demo.output());

    // Ctrl-C in deploy/dev: SIGTERM to every binary at once (its stop()), with alice's and bob's
    // sockets still connected. Each exits 0, and none said anything alarming from start to stop.
    for process in &running {
        process.signal(Signal::SIGTERM);
    }
    for process in &mut running {
        let status = process.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{} exit status", process.bin.name());
    }
    for process in &running {
        let what = format!("{} to log its stop", process.bin.name());
        switchboard_tests::eventually(&what, Duration::from_secs(2), || {
            let stopped = process.logs().iter().any(|l| l.contains("\"stopped\""));
            async move { stopped.then_some(()) }
        })
        .await;
    }
    let loud: Vec<String> = running
        .iter()
        .flat_map(|process| {
            loud_lines(process).into_iter().map(|line| format!("{}: {line}", process.bin.name()))
        })
        .collect();
    assert!(loud.is_empty(), "the binaries logged {} alarming lines:\n{}", loud.len(), loud.join("\n"));
}
