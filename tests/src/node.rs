//! The official `socket.io-client`, driven from Rust through `tests/node/driver.mjs` (one Node
//! process hosting any number of named clients; newline-delimited JSON both ways: see the
//! driver's header for the protocol).

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
};

/// How long the helpers wait for an expected line before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Lines read but not yet claimed by a wait.
    backlog: Vec<Value>,
    next_req: u64,
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node")
}

impl Driver {
    pub async fn start() -> Driver {
        let dir = node_dir();
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "tests/node has no node_modules: run `npm ci --prefix tests/node` (tests/run does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (is Node.js installed?)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                match serde_json::from_str(&line) {
                    Ok(value) => {
                        if sender.send(value).is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("[driver stdout, not JSON] {line}"),
                }
            }
        });
        let mut driver = Driver { child, stdin, lines, backlog: Vec::new(), next_req: 0 };
        driver.wait_for("the driver to start", |l| l["type"] == "ready").await;
        driver
    }

    async fn send(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("write to the driver");
    }

    /// Waits for the first line (already read or still to come) that matches, and claims it.
    pub async fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(what, WAIT, matches).await.unwrap_or_else(|| {
            panic!("timed out after {WAIT:?} waiting for {what}; unclaimed lines: {:#?}", self.backlog)
        })
    }

    /// Like [`Driver::wait_for`], but returns `None` on timeout.
    pub async fn wait_for_within(
        &mut self,
        _what: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&matches) {
            return Some(self.backlog.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if matches(&line) => return Some(line),
                Ok(Some(line)) => self.backlog.push(line),
                Ok(None) => panic!("the driver exited"),
                Err(_) => return None,
            }
        }
    }

    /// Connects a client; `Ok(socket id)` on `connect`, `Err(message)` on `connect_error`.
    pub async fn connect(&mut self, client: &str, url: &str, options: Value) -> Result<String, String> {
        self.send(json!({ "cmd": "connect", "client": client, "url": url, "options": options })).await;
        let line = self
            .wait_for(&format!("{client} to connect or fail"), |l| {
                l["client"] == client && (l["type"] == "connect" || l["type"] == "connect_error")
            })
            .await;
        if line["type"] == "connect" {
            Ok(line["id"].as_str().unwrap_or_default().to_owned())
        } else {
            Err(line["message"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// Connects several clients at once (every command goes out before any answer is read) and
    /// returns each one's result, in the order given.
    pub async fn connect_all(
        &mut self,
        url: &str,
        clients: &[(String, Value)],
    ) -> Vec<Result<String, String>> {
        for (client, options) in clients {
            self.send(json!({ "cmd": "connect", "client": client, "url": url, "options": options })).await;
        }
        let mut results = Vec::with_capacity(clients.len());
        for (client, _) in clients {
            let line = self
                .wait_for(&format!("{client} to connect or fail"), |l| {
                    l["client"] == client.as_str() && (l["type"] == "connect" || l["type"] == "connect_error")
                })
                .await;
            results.push(if line["type"] == "connect" {
                Ok(line["id"].as_str().unwrap_or_default().to_owned())
            } else {
                Err(line["message"].as_str().unwrap_or_default().to_owned())
            });
        }
        results
    }

    /// Emits with an acknowledgement and returns the reply.
    pub async fn emit_ack(&mut self, client: &str, event: &str, args: Value) -> Value {
        self.next_req += 1;
        let req = self.next_req;
        let args = if args.is_array() { args } else { json!([args]) };
        self.send(json!({ "cmd": "emit", "client": client, "event": event, "args": args, "req": req, "ack": true, "timeoutMs": 8000 }))
            .await;
        let line = self
            .wait_for(&format!("the ack of {event} from {client}"), |l| {
                l["client"] == client && l["req"] == req && (l["type"] == "ack" || l["type"] == "ack_timeout")
            })
            .await;
        assert_eq!(line["type"], "ack", "{event} from {client} was not acknowledged: {line}");
        line["reply"].clone()
    }

    /// Emits with an acknowledgement and returns at once; [`Driver::ack`] waits for the reply.
    pub async fn emit_later(&mut self, client: &str, event: &str, args: Value) -> u64 {
        self.next_req += 1;
        let args = if args.is_array() { args } else { json!([args]) };
        let req = self.next_req;
        self.send(json!({ "cmd": "emit", "client": client, "event": event, "args": args, "req": req, "ack": true, "timeoutMs": 15000 }))
            .await;
        req
    }

    /// The reply to the emit [`Driver::emit_later`] numbered `req`.
    pub async fn ack(&mut self, client: &str, req: u64) -> Value {
        let line = self
            .wait_for_within("an ack", std::time::Duration::from_secs(20), |l| {
                l["client"] == client && l["req"] == req && (l["type"] == "ack" || l["type"] == "ack_timeout")
            })
            .await
            .unwrap_or_else(|| panic!("no ack for request {req} of {client}"));
        assert_eq!(line["type"], "ack", "request {req} of {client}: {line}");
        line["reply"].clone()
    }

    /// Emits every event of `batch` at once, without waiting in between, then collects the
    /// replies in emit order.
    pub async fn emit_ack_many(&mut self, client: &str, event: &str, batch: Vec<Value>) -> Vec<Value> {
        let mut reqs = Vec::new();
        for args in batch {
            self.next_req += 1;
            let args = if args.is_array() { args } else { json!([args]) };
            let command = json!({ "cmd": "emit", "client": client, "event": event, "args": args, "req": self.next_req, "ack": true, "timeoutMs": 15000 });
            self.send(command).await;
            reqs.push(self.next_req);
        }
        let mut replies = Vec::new();
        for req in reqs {
            let line = self
                .wait_for_within("an ack", std::time::Duration::from_secs(20), |l| {
                    l["client"] == client
                        && l["req"] == req
                        && (l["type"] == "ack" || l["type"] == "ack_timeout")
                })
                .await
                .unwrap_or_else(|| panic!("no ack for request {req} of {client}"));
            assert_eq!(line["type"], "ack", "{event} from {client}: {line}");
            replies.push(line["reply"].clone());
        }
        replies
    }

    /// Every `event` received by `client` so far or within `quiet` of the last one, in order.
    pub async fn events_until_quiet(&mut self, client: &str, event: &str, quiet: Duration) -> Vec<Value> {
        let mut found = Vec::new();
        while let Some(line) = self
            .wait_for_within("", quiet, |l| {
                l["client"] == client && l["type"] == "event" && l["event"] == event
            })
            .await
        {
            found.push(line["args"][0].clone());
        }
        found
    }

    /// Emits without an acknowledgement.
    pub async fn emit(&mut self, client: &str, event: &str, args: Value) {
        self.next_req += 1;
        let args = if args.is_array() { args } else { json!([args]) };
        self.send(json!({ "cmd": "emit", "client": client, "event": event, "args": args, "req": self.next_req, "ack": false }))
            .await;
    }

    /// Waits for a server event on a client and returns its first argument.
    pub async fn event(&mut self, client: &str, event: &str) -> Value {
        let line = self
            .wait_for(&format!("{event} on {client}"), |l| {
                l["client"] == client && l["type"] == "event" && l["event"] == event
            })
            .await;
        line["args"][0].clone()
    }

    /// Waits for a server event on a client whose first argument is about `user` (its
    /// `userId`), and returns that argument.
    pub async fn event_about(&mut self, client: &str, event: &str, user: &str) -> Value {
        let line = self
            .wait_for(&format!("{event} about {user} on {client}"), |l| {
                l["client"] == client
                    && l["type"] == "event"
                    && l["event"] == event
                    && l["args"][0]["userId"] == user
            })
            .await;
        line["args"][0].clone()
    }

    /// Asserts that `client` gets no `event` about `user` for `quiet`.
    pub async fn no_event_about(&mut self, client: &str, event: &str, user: &str, quiet: Duration) {
        let got = self
            .wait_for_within("", quiet, |l| {
                l["client"] == client
                    && l["type"] == "event"
                    && l["event"] == event
                    && l["args"][0]["userId"] == user
            })
            .await;
        assert!(got.is_none(), "{client} got an unexpected {event} about {user}: {got:?}");
    }

    /// Asserts that `client` gets no `event` for `quiet`.
    pub async fn no_event(&mut self, client: &str, event: &str, quiet: Duration) {
        let got = self
            .wait_for_within("", quiet, |l| {
                l["client"] == client && l["type"] == "event" && l["event"] == event
            })
            .await;
        assert!(got.is_none(), "{client} got an unexpected {event}: {got:?}");
    }

    /// Waits for a client's `disconnect` and returns the reason.
    pub async fn disconnected(&mut self, client: &str) -> String {
        let line = self
            .wait_for(&format!("{client} to disconnect"), |l| {
                l["client"] == client && l["type"] == "disconnect"
            })
            .await;
        line["reason"].as_str().unwrap_or_default().to_owned()
    }

    /// Disconnects a client and waits until the driver reports it gone.
    pub async fn disconnect(&mut self, client: &str) {
        self.start_disconnect(client).await;
        self.disconnected(client).await;
    }

    /// Asks for a client's disconnect without waiting for it ([`Driver::disconnected`] does).
    pub async fn start_disconnect(&mut self, client: &str) {
        self.send(json!({ "cmd": "disconnect", "client": client })).await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
