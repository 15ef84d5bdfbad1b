//! What the scenarios measure with: latency histograms, CPU time and memory of processes
//! (from `/proc`), and a description of the machine for the report.

use std::{collections::BTreeMap, fs, time::Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A latency recorder in microseconds, 1 µs to 10 min at 3 significant digits.
pub struct Recorder(Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Recorder {
    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }

    pub fn summary(&self) -> Latency {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: self.0.len(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// Microseconds since the load generator started: the clock inside message contents, so that
/// the receiver can tell how long a message took (sender and receiver are this process).
pub fn now_micros() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A message content that carries its send time: `<micros> <n> `, padded with `x` to `chars`.
/// Returns the send time too.
pub fn stamped(n: u64, chars: usize) -> (u64, String) {
    let sent = now_micros();
    let mut content = format!("{sent} {n} ");
    while content.len() < chars {
        content.push('x');
    }
    (sent, content)
}

/// How long ago the content made by [`stamped`] was sent, in microseconds.
pub fn age_micros(content: &str) -> Option<u64> {
    let sent: u64 = content.split(' ').next()?.parse().ok()?;
    Some(now_micros().saturating_sub(sent))
}

/// Which processes to account for, by name in the report.
#[derive(Clone, Debug)]
pub enum Select {
    Pid(u32),
    /// Every process whose command name (`/proc/<pid>/comm`) equals this; PostgreSQL forks a
    /// process per connection and RabbitMQ runs as `beam.smp`.
    Comm(String),
}

/// Parses `name=pid` or `name=comm:<command name>`.
pub fn parse_watch(spec: &str) -> Result<(String, Select), String> {
    let (name, what) = spec.split_once('=').ok_or("expected name=pid or name=comm:<command>")?;
    let select = match what.strip_prefix("comm:") {
        Some(comm) => Select::Comm(comm.to_owned()),
        None => Select::Pid(what.parse().map_err(|_| format!("{what:?} is not a pid"))?),
    };
    Ok((name.to_owned(), select))
}

/// CPU seconds and resident memory of each watched group, and of the whole machine.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub at: Option<Instant>,
    pub groups: BTreeMap<String, Usage>,
    /// Busy CPU seconds of the whole machine (all cores, everything running).
    pub machine_busy_s: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// The kernel's USER_HZ, the unit of `/proc/<pid>/stat` times; 100 on every Linux ABI we run on.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn snapshot(watch: &[(String, Select)]) -> Snapshot {
    let mut groups: BTreeMap<String, Usage> =
        watch.iter().map(|(n, _)| (n.clone(), Usage::default())).collect();
    let wants_comm = watch.iter().any(|(_, s)| matches!(s, Select::Comm(_)));
    let pids: Vec<u32> = if wants_comm {
        fs::read_dir("/proc")
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default()
    } else {
        watch.iter().filter_map(|(_, s)| if let Select::Pid(p) = s { Some(*p) } else { None }).collect()
    };
    for pid in pids {
        let Some((comm, usage)) = read_process(pid) else { continue };
        for (name, select) in watch {
            let hit = match select {
                Select::Pid(p) => *p == pid,
                Select::Comm(c) => *c == comm,
            };
            if hit {
                let group = groups.get_mut(name).expect("every group is present");
                group.cpu_s += usage.cpu_s;
                group.rss_kib += usage.rss_kib;
            }
        }
    }
    Snapshot { at: Some(Instant::now()), groups, machine_busy_s: machine_busy_seconds() }
}

/// Reads one process's command name, CPU time (user + system) and resident set.
pub fn read_process(pid: u32) -> Option<(String, Usage)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some((comm, Usage { cpu_s: ticks / TICKS_PER_SECOND, rss_kib }))
}

fn machine_busy_seconds() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(cpu) = stat.lines().next() else { return 0.0 };
    let values: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle) / TICKS_PER_SECOND
}

/// CPU used between two snapshots, per group and in all.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    pub seconds: f64,
    /// CPU seconds per watched group.
    pub by_process_s: BTreeMap<String, f64>,
    /// The sum over the watched groups (the system under test; the load generator is left out
    /// when it is not watched).
    pub watched_s: f64,
    /// Every busy CPU second of the machine, the load generator included.
    pub machine_s: f64,
}

pub fn cpu_between(before: &Snapshot, after: &Snapshot) -> CpuUse {
    let seconds = match (before.at, after.at) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let by_process_s: BTreeMap<String, f64> = after
        .groups
        .iter()
        .map(|(name, usage)| {
            let start = before.groups.get(name).map_or(0.0, |u| u.cpu_s);
            (name.clone(), (usage.cpu_s - start).max(0.0))
        })
        .collect();
    CpuUse {
        seconds,
        watched_s: by_process_s.values().sum(),
        by_process_s,
        machine_s: after.machine_busy_s - before.machine_busy_s,
    }
}

/// The machine the figures were taken on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .map_or(0, |kib: u64| kib / 1024);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_mib,
        kernel,
    }
}
