//! A binary under test: started with its own environment, its output captured, stopped with
//! signals, killed when the test ends.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Edge,
    Messages,
    Presence,
    Notifier,
}

impl Bin {
    pub const ALL: [Bin; 4] = [Bin::Edge, Bin::Messages, Bin::Presence, Bin::Notifier];

    pub fn name(self) -> &'static str {
        match self {
            Bin::Edge => "switchboard-edge",
            Bin::Messages => "switchboard-messages",
            Bin::Presence => "switchboard-presence",
            Bin::Notifier => "switchboard-notifier",
        }
    }

    /// The binary as cargo built it, in the same profile as the running executable: a test
    /// runs from `target/<profile>/deps/`, a benchmark binary from `target/<profile>/`.
    pub fn path(self) -> PathBuf {
        let exe = std::env::current_exe().expect("the running executable's path");
        let mut dir = exe.parent().expect("a directory").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let path = dir.join(self.name());
        assert!(
            path.exists(),
            "{} is missing: build it first with `cargo build --workspace --bins`",
            path.display()
        );
        path
    }
}

/// A running binary. Killed on drop; its output is printed if the test is failing.
pub struct Running {
    pub bin: Bin,
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

/// Captures a child's output lines, and reports the address once it logs "listening".
fn capture(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    listening: watch::Sender<Option<SocketAddr>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["message"] == "listening"
                && let Some(addr) = json["addr"].as_str().and_then(|a| a.parse().ok())
            {
                listening.send_replace(Some(addr));
            }
            logs.lock().expect("logs").push(line);
        }
    });
}

impl Running {
    pub async fn start(bin: Bin, env: &[(String, String)]) -> Running {
        let (running, _) = Self::start_inner(bin, env, true).await;
        running.expect("the process listens")
    }

    /// Starts a binary that is expected to exit by itself (a configuration error): returns its
    /// exit status and everything it printed.
    pub async fn run_to_exit(
        bin: Bin,
        env: &[(String, String)],
        timeout: Duration,
    ) -> (ExitStatus, Vec<String>) {
        let (running, mut child_logs) = Self::start_inner(bin, env, false).await;
        let mut running = running.expect("started");
        let status = running.wait_exit(timeout).await;
        // Give the capture tasks a moment to read the pipe to its end.
        crate::eventually("the output pipe to close", Duration::from_secs(5), || {
            let done = child_logs.has_changed().is_err();
            async move { done.then_some(()) }
        })
        .await;
        child_logs.mark_unchanged();
        let logs = running.logs();
        (status, logs)
    }

    async fn start_inner(
        bin: Bin,
        env: &[(String, String)],
        wait_listening: bool,
    ) -> (Option<Running>, watch::Receiver<Option<SocketAddr>>) {
        let mut command = Command::new(bin.path());
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", bin.name()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening, mut addr) = watch::channel(None);
        capture(child.stdout.take().expect("stdout"), logs.clone(), listening.clone());
        capture(child.stderr.take().expect("stderr"), logs.clone(), listening);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        if !wait_listening {
            let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
            return (Some(Running { bin, addr: placeholder, child, logs, http }), addr);
        }
        let got = tokio::time::timeout(Duration::from_secs(30), addr.wait_for(Option::is_some))
            .await
            .map(|result| result.map(|a| *a));
        let addr_value = match got {
            Ok(Ok(Some(addr))) => addr,
            _ => {
                let logs = logs.lock().expect("logs").join("\n");
                panic!("{} did not start listening within 30 s; output:\n{logs}", bin.name());
            }
        };
        (Some(Running { bin, addr: addr_value, child, logs, http }), addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id().and_then(|id| i32::try_from(id).ok()).expect("the process is running")
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// GET a path; returns the status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        match self.http.get(format!("{}{path}", self.url())).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(error) => (0, error.to_string()),
        }
    }

    /// POSTs (or DELETEs, with `method`) JSON to the ingress with a bearer key; returns the
    /// status and the JSON body (`Null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.expect("the edge answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// POSTs JSON to the ingress with the test key.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(crate::INGRESS_KEY), Some(&body.to_string())).await
    }

    /// Waits until `/readyz` answers `status`, at most `timeout`.
    pub async fn wait_readyz(&self, status: u16, timeout: Duration) {
        let what = format!("{} /readyz to answer {status}", self.bin.name());
        crate::eventually(&what, timeout, || async { (self.get("/readyz").await.0 == status).then_some(()) })
            .await;
    }

    pub async fn wait_ready(&self) {
        self.wait_readyz(200, Duration::from_secs(30)).await;
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("send a signal");
    }

    /// Waits for the process to exit, at most `timeout` (then panics).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for the process"),
            Err(_) => panic!("{} did not exit within {timeout:?}", self.bin.name()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs.lock().map(|l| l.join("\n")).unwrap_or_default();
            eprintln!("----- output of {} ({}) -----\n{logs}\n-----", self.bin.name(), self.addr);
        }
        let _ = self.child.start_kill();
    }
}
