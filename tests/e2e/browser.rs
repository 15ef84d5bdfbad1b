//! The TypeScript kit's demo page in headless Chromium, against the real system (issue 9): the
//! four binaries, the demo server (`clients/typescript/demo/serve.mjs`, which publishes the
//! match with the kit's server emitter) and the page (the kit's client and React hook), driven
//! by `clients/typescript/e2e/demo.mjs` with `playwright-core` and Debian's chromium. Two users
//! match, see each other online and typing, and chat; a screenshot of the conversation is saved
//! to `target/artifacts/demo.png`.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use switchboard_tests::{Bin, INGRESS_KEY, TestEnv};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const HOUR: chrono::Duration = chrono::Duration::hours(1);
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) fn kit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

/// `target/artifacts`, next to the profile directory this test runs from.
pub(crate) fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/e2e-<hash>
    let target = exe.ancestors().nth(3).expect("the target directory").to_path_buf();
    target.join("artifacts")
}

/// Fails with what to run when something the test needs was not prepared (tests/run does it).
pub(crate) fn require(path: PathBuf, how: &str) {
    assert!(path.exists(), "{} is missing: {how}", path.display());
}

/// The demo server, killed when dropped.
pub(crate) struct DemoServer {
    child: Child,
    pub(crate) url: String,
    /// What it printed after its first line (a failed ingress request), also shown as it comes.
    output: Arc<Mutex<Vec<String>>>,
}

impl DemoServer {
    /// On a free port, publishing with the test edges' ingress key.
    async fn start(edge_url: &str) -> DemoServer {
        DemoServer::start_with(edge_url, INGRESS_KEY, 0).await
    }

    /// On 127.0.0.1:`port` (0: a free one), publishing through `edge_url` with `ingress_key`.
    pub(crate) async fn start_with(edge_url: &str, ingress_key: &str, port: u16) -> DemoServer {
        let mut child = Command::new("node")
            .arg("demo/serve.mjs")
            .current_dir(kit_dir())
            .env("DEMO_PORT", port.to_string())
            .env("DEMO_HOST", "127.0.0.1")
            .env("SWITCHBOARD_URL", edge_url)
            .env("SWITCHBOARD_INGRESS_KEY", ingress_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (is Node.js installed?)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // It prints one line once it listens: "Switchboard demo on http://localhost:<port>/ ...".
        let line = match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                // It failed to start (port taken, no build): say why, from what it printed.
                let mut said = Vec::new();
                while let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_secs(2), errors.next_line()).await
                {
                    said.push(line);
                }
                panic!("the demo server did not say where it listens ({other:?}):\n{}", said.join("\n"));
            }
        };
        let port = line
            .split("http://localhost:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no port in the demo server's line {line:?}"));
        // Anything it prints later (failed match requests, on stderr) goes to the test's output,
        // and is kept.
        let output = Arc::new(Mutex::new(Vec::new()));
        let kept = output.clone();
        tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    Ok(Some(line)) = lines.next_line() => line,
                    Ok(Some(line)) = errors.next_line() => line,
                    else => break,
                };
                eprintln!("[demo server] {line}");
                kept.lock().expect("the demo server's output").push(line);
            }
        });
        DemoServer { child, url: format!("http://127.0.0.1:{port}/"), output }
    }

    /// Everything it printed after the line saying where it listens.
    pub(crate) fn output(&self) -> Vec<String> {
        self.output.lock().expect("the demo server's output").clone()
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn two_users_chat_in_the_demo_page_in_chromium() {
    let kit = kit_dir();
    require(PathBuf::from(CHROMIUM), "install it with `apt-get install chromium` (tests/run does)");
    let build = "run `npm ci && npm run build` in clients/typescript (tests/run does)";
    require(kit.join("node_modules/playwright-core"), build);
    require(kit.join("dist/server.js"), build);
    require(kit.join("demo/dist/index.html"), build);

    let env = TestEnv::new().await;
    let (_messages, _presence, _notifier) = tokio::join!(
        env.spawn_ready(Bin::Messages, &[]),
        env.spawn_ready(Bin::Presence, &[]),
        env.spawn_ready(Bin::Notifier, &[]),
    );
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    env.add_session("alice-token", "alice", HOUR).await;
    env.add_session("bob-token", "bob", HOUR).await;
    let demo = DemoServer::start(&edge.url()).await;

    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("create target/artifacts");
    let screenshot = artifacts.join("demo.png");
    let _ = std::fs::remove_file(&screenshot);
    let run = Command::new("node")
        .arg("e2e/demo.mjs")
        .arg(&demo.url)
        .arg(&screenshot)
        .current_dir(&kit)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the browser run finishes within 150 s")
        .expect("run node e2e/demo.mjs");
    assert!(
        output.status.success(),
        "the demo page failed in Chromium ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("{}: {e}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", screenshot.display());
    // What the page showed went through the system: both messages are stored, once each.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM messages WHERE content IN ('Hi bob! Coffee at five?', 'Sure, see you there.')"
        )
        .await,
        2
    );
}
