//! `coldstart`: how long each binary takes from `exec` to answering `/readyz` with 200, with
//! the broker and database already up. Each binary is started `--runs` times, one at a time,
//! with this process's environment plus its own port, then stopped with SIGTERM.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{sys::signal, unistd::Pid};
use serde::Serialize;

#[derive(Clone, Debug, clap::Args)]
pub struct ColdStartArgs {
    /// A binary to time, as name=path; the name `edge` gets `WEBSOCKET_PORT`, others
    /// `METRICS_PORT`. Repeatable.
    #[arg(long = "bin", value_parser = parse_bin, required = true)]
    pub bins: Vec<(String, PathBuf)>,
    /// Starts per binary.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

fn parse_bin(spec: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = spec.split_once('=').ok_or("expected name=path")?;
    Ok((name.to_owned(), PathBuf::from(path)))
}

#[derive(Clone, Debug, Serialize)]
pub struct ColdStart {
    pub binary: String,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub all_ms: Vec<f64>,
}

pub async fn run(args: ColdStartArgs) -> anyhow::Result<Vec<ColdStart>> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let mut report = Vec::new();
    for (name, path) in &args.bins {
        let mut times = Vec::new();
        for _ in 0..args.runs {
            times.push(time_one(&http, name, path).await?);
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        eprintln!("coldstart: {name}: median {median:.1} ms over {} runs", times.len());
        report.push(ColdStart {
            binary: name.clone(),
            runs: times.len(),
            median_ms: median,
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
            all_ms: times,
        });
    }
    Ok(report)
}

async fn time_one(http: &reqwest::Client, name: &str, path: &PathBuf) -> anyhow::Result<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let variable = if name == "edge" { "WEBSOCKET_PORT" } else { "METRICS_PORT" };
    let started = Instant::now();
    let mut child = tokio::process::Command::new(path)
        .env(variable, port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready = loop {
        if let Ok(response) = http.get(&url).timeout(Duration::from_secs(1)).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{name} was not ready within 30 s");
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited with {status} before it was ready");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let pid = child.id().context("the child's pid")?;
    signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGTERM)?;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await??;
    if !status.success() {
        bail!("{name} exited with {status} after SIGTERM");
    }
    Ok(ready.as_secs_f64() * 1000.0)
}
