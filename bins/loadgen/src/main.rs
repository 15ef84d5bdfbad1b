//! `switchboard-loadgen`: Switchboard's measuring instrument. It speaks Socket.IO over
//! websocket itself (see [`sio`]), so one process holds thousands of clients, and every
//! scenario prints its figures as JSON. `deploy/bench` runs them all against a freshly
//! started system and turns the results into the report (`report`).

#![forbid(unsafe_code)]

mod broker;
mod database;
mod measure;
mod report;
mod scenarios;
mod sio;
mod system;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

/// Load generator and benchmark report for Switchboard.
///
/// The Socket.IO scenarios need edges running with `AUTH_MODE=jwt` (the load generator signs
/// a token per made-up user with `--jwt-secret`) and `INGRESS_API_KEYS` (it creates
/// conversations through `POST /api/v1/conversations`). Raise the edges'
/// `RATE_LIMIT_PER_SEC` for the chat and fanout scenarios. Each scenario prints progress on
/// stderr and its figures as JSON on stdout (or into `--out`).
#[derive(Debug, Parser)]
#[command(name = "switchboard-loadgen", version)]
struct Cli {
    /// Write the scenario's JSON here instead of stdout.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Two-user conversations: sends acknowledged and deliveries per second, send-to-delivery
    /// latency, and lost, duplicated and out-of-order messages (all must be 0). `--search`
    /// finds the highest rate with p99 under the target and measures latency at half of it.
    Chat(scenarios::chat::ChatArgs),
    /// Many idle authenticated websocket connections: connect rate, how many stay up, and the
    /// edges' resident memory per connection.
    Connections(scenarios::connections::ConnectionsArgs),
    /// One conversation with many sockets over the edges: deliveries per second.
    Fanout(scenarios::fanout::FanoutArgs),
    /// Connects and disconnects per second, then checks the final presence of every user.
    Presence(scenarios::presence::PresenceArgs),
    /// Time from start to `/readyz` 200 of each binary (median of `--runs`).
    Coldstart(scenarios::coldstart::ColdStartArgs),
    /// RabbitMQ alone: persistent publish with confirms and consume with acks, one queue.
    Broker(broker::BrokerArgs),
    /// Combines the scenarios' JSON files of a directory into the Markdown and JSON report.
    Report(report::ReportArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Chat(args) => emit(cli.out, &scenarios::chat::run(args).await?),
        Scenario::Connections(args) => emit(cli.out, &scenarios::connections::run(args).await?),
        Scenario::Fanout(args) => emit(cli.out, &scenarios::fanout::run(args).await?),
        Scenario::Presence(args) => emit(cli.out, &scenarios::presence::run(args).await?),
        Scenario::Coldstart(args) => emit(cli.out, &scenarios::coldstart::run(args).await?),
        Scenario::Broker(args) => emit(cli.out, &broker::baseline(args).await?),
        Scenario::Report(args) => report::write(args),
    }
}

fn emit(out: Option<PathBuf>, figures: &impl Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(figures)?;
    match out {
        Some(path) => std::fs::write(path, json + "\n")?,
        None => println!("{json}"),
    }
    Ok(())
}
