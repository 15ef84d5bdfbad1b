//! The system under test as the load generator sees it: edges to connect to, the ingress to
//! set up conversations with, and tokens for made-up users.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use crate::sio::{self, Socket, Target};

/// Options every Socket.IO scenario takes.
#[derive(Clone, Debug, clap::Args)]
pub struct SystemArgs {
    /// Edges to connect to (`host:port`, comma-separated); clients are spread over them.
    #[arg(long, env = "LOADGEN_EDGES", value_delimiter = ',', default_value = "127.0.0.1:3001")]
    pub edges: Vec<SocketAddr>,
    /// The edge's JWT secret (the edge must run with `AUTH_MODE=jwt`).
    #[arg(long, env = "AUTH_JWT_SECRET")]
    pub jwt_secret: String,
    /// A key of the edge's `INGRESS_API_KEYS`, to create conversations.
    #[arg(long, env = "LOADGEN_INGRESS_KEY")]
    pub ingress_key: String,
    /// Local addresses to connect from, round robin (e.g. 127.0.0.2,127.0.0.3); past about
    /// 28,000 connections to one edge one source address runs out of ports.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<std::net::IpAddr>,
    /// A prefix for the made-up user ids, so runs never share users (default: random).
    #[arg(long)]
    pub run_id: Option<String>,
}

/// What the scenarios use to reach the system.
#[derive(Clone)]
pub struct System {
    args: SystemArgs,
    key: jsonwebtoken::EncodingKey,
    http: reqwest::Client,
    pub run_id: String,
}

impl System {
    pub fn new(args: SystemArgs) -> Self {
        let run_id = args.run_id.clone().unwrap_or_else(|| format!("{:06x}", fastrand::u32(..0xff_ffff)));
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(args.jwt_secret.as_bytes()),
            http: reqwest::Client::new(),
            run_id,
            args,
        }
    }

    /// A user id unique to this run.
    pub fn user(&self, name: &str) -> String {
        format!("lg{}-{name}", self.run_id)
    }

    pub fn token(&self, user: &str) -> String {
        #[derive(Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            exp: i64,
        }
        let exp = chrono::Utc::now().timestamp() + 24 * 3600;
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &Claims { sub: user, exp }, &self.key)
            .expect("HS256 signing cannot fail")
    }

    /// The `i`-th connection's target: edges and source addresses taken round robin.
    pub fn target(&self, i: usize) -> Target {
        let edges = &self.args.edges;
        let sources = &self.args.source_ips;
        Target {
            addr: edges[i % edges.len()],
            source: (!sources.is_empty()).then(|| sources[(i / edges.len()) % sources.len()]),
        }
    }

    pub fn edges(&self) -> &[SocketAddr] {
        &self.args.edges
    }

    /// Connects `user` to the `i`-th target.
    pub async fn connect(&self, i: usize, user: &str, on_event: sio::OnEvent) -> anyhow::Result<Socket> {
        Socket::connect(&self.target(i), &self.token(user), on_event)
            .await
            .with_context(|| format!("connecting {user} to {}", self.target(i).addr))
    }

    /// Creates conversations through the first edge's ingress, `concurrency` at a time, and
    /// returns their ids in the order of `participants`.
    pub async fn create_conversations(&self, participants: Vec<Vec<String>>) -> anyhow::Result<Vec<String>> {
        futures::stream::iter(participants)
            .map(|users| self.create_conversation(users))
            .buffered(16)
            .try_collect()
            .await
    }

    async fn create_conversation(&self, participants: Vec<String>) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            conversation_id: String,
        }
        let url = format!("http://{}/api/v1/conversations", self.args.edges[0]);
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.args.ingress_key)
            .json(&serde_json::json!({ "participants": participants }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .context("creating a conversation")?;
        if response.status() != reqwest::StatusCode::CREATED {
            bail!(
                "creating a conversation: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.json::<Created>().await?.conversation_id)
    }
}

/// Connects many sockets, `concurrency` handshakes at a time, in index order of the result.
pub async fn connect_all<F>(
    system: &System,
    users: &[String],
    concurrency: usize,
    on_event: F,
) -> anyhow::Result<Vec<Socket>>
where
    F: Fn(usize) -> sio::OnEvent,
{
    futures::stream::iter(users.iter().enumerate())
        .map(|(i, user)| system.connect(i, user, on_event(i)))
        .buffered(concurrency)
        .try_collect()
        .await
}
