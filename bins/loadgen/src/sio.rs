//! A small Socket.IO v5 client (Engine.IO v4, websocket transport only, namespace `/`), light
//! enough to hold tens of thousands of connections in one process.
//!
//! The packets it needs are few: the server's open packet (`0{...}`), the namespace connect
//! with the auth payload (`40{...}`, answered `40{...}` or `44{...}`), events (`42[...]`, with
//! an ack id `42<id>[...]`), acks (`43<id>[...]`), the server's ping (`2`, answered `3`), and
//! the disconnects (`41`, `1`).
//!
//! Each connection is one task that owns the websocket. Incoming events are handed to a
//! callback on that task, so a scenario sees them in the order the server sent them, without
//! a channel hop or a copy of the payload.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};
use tokio_util::sync::CancellationToken;

/// What a scenario does with an event the server sent: `(event name, payload)`.
pub type OnEvent = Arc<dyn Fn(&str, &RawValue) + Send + Sync>;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// The edge, as `host:port`.
    pub addr: SocketAddr,
    /// The local address to connect from; several loopback sources let one machine open more
    /// connections to one edge than one source address has ephemeral ports.
    pub source: Option<IpAddr>,
}

/// Why a connection was not established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused the namespace connect (`connect_error`) with this message.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// One connected socket. Cheap to clone; the connection closes when [`Socket::close`] is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct Socket {
    out: mpsc::UnboundedSender<Command>,
    closed: CancellationToken,
}

enum Command {
    Emit { event: &'static str, data: String, ack: Option<oneshot::Sender<String>> },
    Close,
}

/// How long the handshake may take before the attempt counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

impl Socket {
    /// Connects and authenticates with `auth: { token }`. Returns once the server has
    /// answered the namespace connect, which is when a `socket.io-client` fires `connect`.
    pub async fn connect(target: &Target, token: &str, on_event: OnEvent) -> Result<Socket, ConnectError> {
        let ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(target, token))
            .await
            .map_err(|_| anyhow!("no handshake within {HANDSHAKE_TIMEOUT:?}"))??;
        let (out, commands) = mpsc::unbounded_channel();
        let closed = CancellationToken::new();
        tokio::spawn(run(ws, commands, on_event, closed.clone()));
        Ok(Socket { out, closed })
    }

    /// Emits `event` and waits for its ack; returns the ack's payload as JSON text.
    pub async fn ask(&self, event: &'static str, data: &impl Serialize) -> anyhow::Result<String> {
        let data = serde_json::to_string(data)?;
        let (ack, reply) = oneshot::channel();
        self.out.send(Command::Emit { event, data, ack: Some(ack) }).map_err(|_| anyhow!("socket closed"))?;
        reply.await.map_err(|_| anyhow!("socket closed before the ack of {event}"))
    }

    /// Closes the connection (a client-side disconnect).
    pub fn close(&self) {
        let _ = self.out.send(Command::Close);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the connection has ended, for whatever reason.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }
}

async fn handshake(target: &Target, token: &str) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(source) = target.source {
        socket.bind(SocketAddr::new(source, 0)).context("binding the source address")?;
    }
    let stream = socket.connect(target.addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", target.addr);
    // Small buffers: the defaults (128 KiB each way) would cost gigabytes at 20k connections.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(8192);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.context("upgrading")?;

    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        bail!("expected the engine's open packet, got {open:?}");
    }
    let auth = serde_json::json!({ "token": token });
    ws.send(Message::text(format!("40{auth}"))).await?;
    loop {
        let packet = next_text(&mut ws).await?;
        if packet.starts_with("40") {
            return Ok(ws);
        }
        if let Some(error) = packet.strip_prefix("44") {
            #[derive(serde::Deserialize)]
            struct Refusal {
                message: String,
            }
            let message =
                serde_json::from_str::<Refusal>(error).map(|r| r.message).unwrap_or(error.to_owned());
            return Err(ConnectError::Refused(message).into());
        }
        if packet == "2" {
            ws.send(Message::text("3")).await?;
        }
    }
}

async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => bail!("closed during the handshake"),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// The connection's task: writes what the scenario emits, answers pings, routes acks and
/// hands events to the callback.
async fn run(
    mut ws: WebSocketStream<TcpStream>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    on_event: OnEvent,
    closed: CancellationToken,
) {
    let mut next_ack = 0u64;
    let mut pending: HashMap<u64, oneshot::Sender<String>> = HashMap::new();
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => match handle(text.as_str(), &mut pending, &on_event) {
                    Reply::Nothing => {}
                    Reply::Pong => {
                        if ws.send(Message::text("3")).await.is_err() {
                            break;
                        }
                    }
                    Reply::Closed => break,
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            command = commands.recv() => {
                let Some(command) = command else { break };
                // Write everything that is queued, then flush once: one syscall for a burst.
                let mut next = Some(command);
                let mut close = false;
                while let Some(command) = next.take() {
                    match command {
                        Command::Emit { event, data, ack } => {
                            let packet = match ack {
                                Some(ack) => {
                                    next_ack += 1;
                                    pending.insert(next_ack, ack);
                                    format!("42{next_ack}[\"{event}\",{data}]")
                                }
                                None => format!("42[\"{event}\",{data}]"),
                            };
                            if ws.feed(Message::text(packet)).await.is_err() {
                                close = true;
                                break;
                            }
                        }
                        Command::Close => {
                            close = true;
                            break;
                        }
                    }
                    next = commands.try_recv().ok();
                }
                if close {
                    let _ = ws.close(None).await;
                    break;
                }
                if ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    closed.cancel();
}

enum Reply {
    Nothing,
    Pong,
    Closed,
}

fn handle(packet: &str, pending: &mut HashMap<u64, oneshot::Sender<String>>, on_event: &OnEvent) -> Reply {
    match packet.as_bytes().first() {
        Some(b'2') => return Reply::Pong,
        Some(b'1') => return Reply::Closed,
        Some(b'4') => {}
        _ => return Reply::Nothing,
    }
    let body = &packet[1..];
    if let Some(event) = body.strip_prefix('2') {
        // An event, possibly with an ack id the server wants answered (none of ours does).
        let array = event.trim_start_matches(|c: char| c.is_ascii_digit());
        if let Ok((name, data)) = serde_json::from_str::<(&str, &RawValue)>(array) {
            on_event(name, data);
        }
    } else if let Some(ack) = body.strip_prefix('3') {
        let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
        let (id, array) = ack.split_at(digits);
        let payload = array.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(array);
        if let Some(reply) = id.parse().ok().and_then(|id| pending.remove(&id)) {
            let _ = reply.send(payload.to_owned());
        }
    } else if body.starts_with('1') {
        return Reply::Closed;
    }
    Reply::Nothing
}
