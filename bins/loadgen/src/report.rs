//! `report`: one JSON document and one Markdown page from the scenarios' JSON files.
//!
//! `deploy/bench` writes each scenario's figures to `<dir>/<name>.json` (`chat`, `broker`,
//! `connections-19k`, `connections-50k-<edge>`, `fanout`, `presence`, `coldstart`) and the
//! configuration it ran with to `<dir>/config.json`. A missing file shows as "not run".

use std::{collections::BTreeMap, fmt::Write as _, fs, path::PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::measure;

#[derive(Clone, Debug, clap::Args)]
pub struct ReportArgs {
    /// The directory of scenario results.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where to write the combined JSON.
    #[arg(long)]
    pub json: PathBuf,
    /// Where to write the Markdown page.
    #[arg(long)]
    pub markdown: PathBuf,
}

pub fn write(args: ReportArgs) -> anyhow::Result<()> {
    let mut results = BTreeMap::new();
    for entry in fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let text = fs::read_to_string(&path)?;
            let value: Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            results.insert(name, value);
        }
    }
    let config = results.remove("config").unwrap_or(Value::Null);
    let document = json!({ "machine": measure::machine(), "config": config, "results": results });
    fs::write(&args.json, serde_json::to_string_pretty(&document)? + "\n")?;
    fs::write(&args.markdown, markdown(&document))?;
    eprintln!("report: wrote {} and {}", args.json.display(), args.markdown.display());
    Ok(())
}

fn f(value: &Value, pointer: &str) -> Option<f64> {
    value.pointer(pointer).and_then(Value::as_f64)
}

fn n(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => {
            let text = format!("{v:.decimals$}");
            // Thousands separators for readability of large figures.
            let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
            let digits: Vec<char> = int.chars().collect();
            let mut grouped = String::new();
            for (i, c) in digits.iter().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) && *c != '-' && digits[i - 1] != '-' {
                    grouped.push(',');
                }
                grouped.push(*c);
            }
            match frac {
                Some(frac) => format!("{grouped}.{frac}"),
                None => grouped,
            }
        }
        None => "not run".to_owned(),
    }
}

fn markdown(doc: &Value) -> String {
    let r = &doc["results"];
    let mut md = String::new();
    let machine = &doc["machine"];
    let _ = writeln!(md, "# Switchboard benchmark report\n");
    let _ = writeln!(
        md,
        "Taken {} on {} cores ({}), {} MiB, Linux {}, everything (RabbitMQ, PostgreSQL, the four \
         binaries and the load generator) on this one machine. Reproduce with `deploy/bench`.\n",
        doc["config"]["date"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["memory_mib"],
        machine["kernel"].as_str().unwrap_or("?"),
    );

    let chat = &r["chat"];
    let two_edges = &r["chat-two-edges"];
    let ceiling = chat.pointer("/runs/0");
    let half = chat.get("at_half").filter(|v| !v.is_null());
    let overload = chat.get("overload").filter(|v| !v.is_null());
    let recovery = chat.get("recovery").filter(|v| !v.is_null());
    let outage = r["outage"].get("outage").filter(|v| !v.is_null());
    let outage_run = r["outage"].pointer("/runs/0");
    let connections_19k = &r["connections-19k"];
    let fifty: Vec<&Value> = ["connections-50k-1", "connections-50k-2", "connections-50k-3"]
        .iter()
        .filter_map(|k| r.get(*k))
        .collect();
    let fifty_held: f64 = fifty.iter().filter_map(|v| f(v, "/held")).sum();
    let fifty_kib = {
        let edges: Vec<&Value> =
            fifty.iter().filter_map(|v| v.get("edges")).filter_map(Value::as_array).flatten().collect();
        let growth: f64 =
            edges.iter().filter_map(|e| Some(f(e, "/rss_after_kib")? - f(e, "/rss_before_kib")?)).sum();
        let conns: f64 = edges.iter().filter_map(|e| f(e, "/connections")).sum();
        (conns > 0.0).then(|| growth / conns)
    };
    let broker_rate = f(&r["broker"], "/consume_per_s");
    let sustained = f(chat, "/max_sustained_rate");

    let _ = writeln!(md, "## Figures against targets\n");
    let _ = writeln!(md, "| figure | measured | target |\n| --- | --- | --- |");
    let rows: Vec<(String, String, &str)> = vec![
        ("chat: max sustained rate, messages/s (p99 < 50 ms)".into(), n(sustained, 0), "≥ 7,500"),
        (
            "chat: closed-loop ceiling, messages/s".into(),
            n(ceiling.and_then(|c| f(c, "/sends_acked_per_s")), 0),
            "",
        ),
        (
            "chat: p99 at half the sustained rate, ms".into(),
            n(half.and_then(|h| f(h, "/latency/p99_ms")), 1),
            "< 50",
        ),
        (
            "chat: CPU per message, all server processes, µs (at the ceiling)".into(),
            n(ceiling.and_then(|c| f(c, "/cpu_us_per_message")), 0),
            "≤ 250",
        ),
        (
            "chat: lost / duplicated / out of order (every run, one and two edges)".into(),
            chat_correctness(&[chat, two_edges]),
            "0 / 0 / 0",
        ),
        (
            "chat: broker publishes per chat message at the ceiling (RabbitMQ's counters)".into(),
            n(ceiling.and_then(|c| f(c, "/broker/published_per_message")), 2),
            "≤ 0.5",
        ),
        (
            "chat: database transactions per chat message at the ceiling (pg_stat_database)".into(),
            n(ceiling.and_then(|c| f(c, "/transactions/per_message")), 3),
            "≤ 0.1",
        ),
        (
            "chat overload (2x the ceiling offered): acked/s against the ceiling".into(),
            match (
                overload.and_then(|o| f(o, "/sends_acked_per_s")),
                ceiling.and_then(|c| f(c, "/sends_acked_per_s")),
            ) {
                (Some(o), Some(c)) => format!("{} ({:.0} %)", n(Some(o), 0), 100.0 * o / c),
                _ => "not run".into(),
            },
            "≥ 80 %",
        ),
        (
            "chat overload: sends answered `timeout` / other errors".into(),
            overload.map_or("not run".into(), |o| {
                let errors = o["errors"].as_object();
                let timeouts = errors.and_then(|e| e.get("timeout")).and_then(Value::as_u64).unwrap_or(0);
                let all: u64 = errors.map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
                format!("{timeouts} / {}", all - timeouts)
            }),
            "0 timeout",
        ),
        (
            "chat overload: largest RSS of each process, MiB".into(),
            overload.and_then(|o| o["peak_rss_kib"].as_object()).map_or("not run".into(), |peaks| {
                peaks
                    .iter()
                    .map(|(name, kib)| format!("{name} {:.0}", kib.as_f64().unwrap_or(0.0) / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            "bounded",
        ),
        (
            "chat after the overload: p99 at half the sustained rate, ms (from 5 s after it drained)".into(),
            n(recovery.and_then(|r| f(r, "/latency/p99_ms")), 1),
            "< 50",
        ),
        (
            "broker outage: seconds stopped / sends acked again after its return, s".into(),
            outage.map_or("not run".into(), |o| {
                format!("{} / {}", n(f(o, "/seconds"), 1), n(f(o, "/acked_again_after_s"), 2))
            }),
            "≤ 2 after the return",
        ),
        (
            "broker outage: sends failed / of them 2 s or more after the return".into(),
            match (outage_run, outage) {
                (Some(run), Some(o)) => {
                    let failed: u64 =
                        run["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
                    format!("{failed} / {}", o["failed_2s_after_return"].as_u64().unwrap_or(0))
                }
                _ => "not run".into(),
            },
            "0 after 2 s",
        ),
        (
            "broker outage: acked messages a receiver never got (after `sync:required` catch-up) / caught up"
                .into(),
            match (outage_run, outage) {
                (Some(run), Some(o)) => format!(
                    "{} / {} ({} `sync:required`)",
                    run["lost"].as_u64().unwrap_or(0),
                    o["caught_up"].as_u64().unwrap_or(0),
                    o["sync_required"].as_u64().unwrap_or(0)
                ),
                _ => "not run".into(),
            },
            "0",
        ),
        (
            "connections: edge RSS per idle connection at 19k on one edge, KiB".into(),
            n(connections_19k.pointer("/edges/0/kib_per_connection").and_then(Value::as_f64), 1),
            "≤ 16",
        ),
        ("connections: held at 19k".into(), n(f(connections_19k, "/held"), 0), "19,000"),
        (
            "connections: after an edge restart, all 19k back, s after it was ready".into(),
            n(f(connections_19k, "/restart/all_back_after_ready_s"), 1),
            "≤ 10",
        ),
        (
            "connections: back after the restart".into(),
            n(f(connections_19k, "/restart/reconnected"), 0),
            "19,000",
        ),
        (
            "connections: edge RSS per idle connection at 50k over three edges, KiB".into(),
            n(fifty_kib, 1),
            "≤ 16",
        ),
        ("connections: held at 50k".into(), n((!fifty.is_empty()).then_some(fifty_held), 0), "50,000"),
        (
            "cold start: slowest binary's median to ready, ms".into(),
            n(
                r["coldstart"]
                    .as_array()
                    .and_then(|a| a.iter().filter_map(|c| f(c, "/median_ms")).reduce(f64::max)),
                1,
            ),
            "< 100",
        ),
        (
            "chat ceiling against the broker baseline (chat messages/s ÷ broker messages/s)".into(),
            match (ceiling.and_then(|c| f(c, "/sends_acked_per_s")), broker_rate) {
                (Some(c), Some(b)) => format!("{:.0} %", 100.0 * c / b),
                _ => "not run".into(),
            },
            "",
        ),
        (
            "broker messages published per second at the chat ceiling, against the baseline".into(),
            match (
                ceiling
                    .and_then(|c| Some(f(c, "/sends_acked_per_s")? * f(c, "/broker/published_per_message")?)),
                broker_rate,
            ) {
                (Some(p), Some(b)) => format!("{} ({:.0} %)", n(Some(p), 0), 100.0 * p / b),
                _ => "not run".into(),
            },
            "",
        ),
    ];
    for (figure, measured, target) in rows {
        let _ = writeln!(md, "| {figure} | {measured} | {target} |");
    }

    let _ = writeln!(md, "\n## chat\n");
    if let Some(runs) = chat.get("runs").and_then(Value::as_array) {
        let _ = writeln!(
            md,
            "{} conversations of two users, {} characters per message.\n",
            chat["conversations"], chat["content_chars"]
        );
        let _ = writeln!(md, "{CHAT_HEADER}");
        for run in runs {
            chat_row(&mut md, run["mode"].as_str().unwrap_or("?"), run);
        }
        for (what, run) in [("half", half), ("overload", overload), ("after the overload", recovery)] {
            if let Some(run) = run {
                chat_row(&mut md, &format!("{} ({what})", run["mode"].as_str().unwrap_or("?")), run);
            }
        }
        if let Some(o) = overload {
            let _ = writeln!(
                md,
                "\nThe overload's errors by code: {}; it drained {} s after the load stopped.",
                o["errors"],
                n(f(o, "/drain_s"), 1)
            );
        }
        if let Some(by) = ceiling.and_then(|c| c.pointer("/cpu/by_process_s")).and_then(Value::as_object) {
            let acked = ceiling.and_then(|c| f(c, "/sends_acked_per_s")).unwrap_or(0.0)
                * ceiling.and_then(|c| f(c, "/measured_s")).unwrap_or(0.0);
            let _ = writeln!(md, "\nCPU per message by process at the ceiling (µs):\n");
            let _ = writeln!(md, "| process | µs/msg |\n| --- | --- |");
            for (name, seconds) in by {
                let us = seconds.as_f64().unwrap_or(0.0) * 1e6 / acked.max(1.0);
                let _ = writeln!(md, "| {name} | {us:.0} |");
            }
        }
        if let Some(broker) = ceiling.and_then(|c| c.get("broker")).filter(|b| !b.is_null()) {
            let _ = writeln!(
                md,
                "\nBroker messages per chat message (RabbitMQ's own counters): {} published, {} delivered.",
                n(f(broker, "/published_per_message"), 2),
                n(f(broker, "/delivered_per_message"), 2),
            );
        }
        if let Some(transactions) = ceiling.and_then(|c| c.get("transactions")).filter(|t| !t.is_null()) {
            let _ = writeln!(
                md,
                "\nDatabase transactions per chat message (pg_stat_database): {} ({} for {} messages).",
                n(f(transactions, "/per_message"), 3),
                transactions["transactions"],
                transactions["chat_messages"],
            );
        }
    } else {
        let _ = writeln!(md, "not run");
    }

    let _ = writeln!(md, "\n## chat over two edges\n");
    match two_edges.pointer("/runs/0") {
        Some(run) => {
            let _ = writeln!(
                md,
                "Each receiver on the other edge than its sender, so every message crosses edges; \
                 {} conversations at a fixed rate.\n",
                two_edges["conversations"]
            );
            let _ = writeln!(md, "{CHAT_HEADER}");
            chat_row(&mut md, run["mode"].as_str().unwrap_or("?"), run);
        }
        None => {
            let _ = writeln!(md, "not run");
        }
    }

    let _ = writeln!(md, "\n## connections\n");
    let _ = writeln!(
        md,
        "| run | requested | connected | held after hold | connects/s | edge | connections | RSS before MiB | RSS after MiB | KiB/connection |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut connection_runs: Vec<(&str, &Value)> = vec![("19k, one edge", connections_19k)];
    for (i, v) in fifty.iter().enumerate() {
        connection_runs.push((["50k, edge 1", "50k, edge 2", "50k, edge 3"][i.min(2)], v));
    }
    for (label, v) in connection_runs {
        if v.is_null() {
            let _ = writeln!(md, "| {label} | not run | | | | | | | | |");
            continue;
        }
        for edge in v["edges"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                n(f(v, "/requested"), 0),
                n(f(v, "/connected"), 0),
                n(f(v, "/held"), 0),
                n(f(v, "/connects_per_s"), 0),
                edge["pid"],
                n(f(edge, "/connections"), 0),
                n(f(edge, "/rss_before_kib").map(|k| k / 1024.0), 1),
                n(f(edge, "/rss_after_kib").map(|k| k / 1024.0), 1),
                n(f(edge, "/kib_per_connection"), 2),
            );
        }
    }

    let fanout = &r["fanout"];
    let _ = writeln!(md, "\n## fanout\n");
    if fanout.is_null() {
        let _ = writeln!(md, "not run");
    } else {
        let _ = writeln!(
            md,
            "One conversation, {} members, {} sockets over {} edges: {} messages/s, **{} deliveries/s**, \
             delivery p50 {} ms, p99 {} ms; lost {}, duplicated {}, out of order {}.",
            fanout["members"],
            fanout["sockets"],
            fanout["edges"],
            n(f(fanout, "/messages_per_s"), 0),
            n(f(fanout, "/deliveries_per_s"), 0),
            n(f(fanout, "/latency/p50_ms"), 1),
            n(f(fanout, "/latency/p99_ms"), 1),
            fanout["lost"],
            fanout["duplicated"],
            fanout["out_of_order"],
        );
    }

    let presence = &r["presence"];
    let _ = writeln!(md, "\n## presence churn\n");
    if presence.is_null() {
        let _ = writeln!(md, "not run");
    } else {
        let _ = writeln!(
            md,
            "{} users, {} connects and {} disconnects in {} s: **{} connects+disconnects/s**. Final state \
             mismatches: {} by `presence:query`, {} by the last event received (both must be 0).",
            presence["users"],
            presence["connects"],
            presence["disconnects"],
            n(f(presence, "/churn_s"), 1),
            n(f(presence, "/changes_per_s"), 0),
            presence["query_mismatches"],
            presence["event_mismatches"],
        );
    }

    let _ = writeln!(md, "\n## cold start\n");
    match r["coldstart"].as_array() {
        Some(bins) => {
            let _ = writeln!(
                md,
                "| binary | runs | median ms | min ms | max ms |\n| --- | --- | --- | --- | --- |"
            );
            for b in bins {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    b["binary"].as_str().unwrap_or("?"),
                    b["runs"],
                    n(f(b, "/median_ms"), 1),
                    n(f(b, "/min_ms"), 1),
                    n(f(b, "/max_ms"), 1),
                );
            }
        }
        None => {
            let _ = writeln!(md, "not run");
        }
    }

    let broker = &r["broker"];
    let _ = writeln!(md, "\n## broker baseline\n");
    if broker.is_null() {
        let _ = writeln!(md, "not run");
    } else {
        let _ = writeln!(
            md,
            "RabbitMQ alone, one durable queue, persistent {}-byte messages, {} publishes awaiting confirms, \
             prefetch {}: **{} published+confirmed/s**, {} consumed+acked/s.",
            broker["size"],
            broker["window"],
            broker["prefetch"],
            n(f(broker, "/publish_per_s"), 0),
            n(f(broker, "/consume_per_s"), 0),
        );
    }

    let _ = writeln!(md, "\n## Configuration\n");
    let _ =
        writeln!(md, "```json\n{}\n```", serde_json::to_string_pretty(&doc["config"]).unwrap_or_default());
    md
}

const CHAT_HEADER: &str = "| run | acked/s | deliveries/s | p50 ms | p95 ms | p99 ms | max ms | ack p99 ms | lost | dup | ooo | errors | server CPU µs/msg | machine CPU µs/msg |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

/// One row of a chat table.
fn chat_row(md: &mut String, label: &str, run: &Value) {
    let errors: u64 = run["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
    let _ = writeln!(
        md,
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} | {} | {} |",
        n(f(run, "/sends_acked_per_s"), 0),
        n(f(run, "/deliveries_per_s"), 0),
        n(f(run, "/latency/p50_ms"), 1),
        n(f(run, "/latency/p95_ms"), 1),
        n(f(run, "/latency/p99_ms"), 1),
        n(f(run, "/latency/max_ms"), 1),
        n(f(run, "/ack_latency/p99_ms"), 1),
        run["lost"],
        run["duplicated"],
        run["out_of_order"],
        n(f(run, "/cpu_us_per_message"), 0),
        n(f(run, "/machine_cpu_us_per_message"), 0),
    );
}

fn chat_correctness(chats: &[&Value]) -> String {
    let runs: Vec<&Value> = chats
        .iter()
        .flat_map(|chat| {
            chat["runs"].as_array().into_iter().flatten().chain(
                ["at_half", "overload", "recovery"]
                    .iter()
                    .filter_map(|k| chat.get(*k).filter(|v| !v.is_null())),
            )
        })
        .collect();
    if runs.is_empty() {
        return "not run".to_owned();
    }
    let sum = |key: &str| runs.iter().filter_map(|r| r[key].as_u64()).sum::<u64>();
    format!("{} / {} / {}", sum("lost"), sum("duplicated"), sum("out_of_order"))
}
