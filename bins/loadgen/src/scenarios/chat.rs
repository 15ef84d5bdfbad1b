//! `chat`: conversations of two users, one sending and one receiving, through the whole
//! system (edge, broker, messages worker, Postgres, broker, edge).
//!
//! Every send carries its send time in the content, so the receiver measures send-to-delivery
//! latency. Correctness is counted per conversation: a message acknowledged but never
//! delivered is lost, a message id seen twice is a duplicate, and a `seq` that is not the
//! previous one plus one is out of order. All three must stay 0.
//!
//! Senders run closed loop (each keeps `--window` sends unacknowledged) or open loop (the
//! conversations together hold `--rate` sends per second). `--search` finds the maximum
//! sustained rate: one closed-loop run gives the ceiling, open-loop runs step down from it
//! until p99 is under `--p99-target-ms`, and a last run at half that rate gives the latency
//! the report quotes.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;
use futures::{StreamExt as _, stream::FuturesUnordered};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};
use tokio_util::sync::CancellationToken;

use crate::{
    broker::{self, BrokerCount},
    database::{Database, TransactionCount},
    measure::{self, CpuUse, Latency, Recorder, Select},
    sio::Socket,
    system::{System, SystemArgs, connect_all},
};

#[derive(Clone, Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Conversations, each of two users: one sends, the other receives.
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// Closed loop: sends each sender keeps unacknowledged.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Open loop: hold this many sends per second in all, instead of a window.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Find the maximum sustained rate (p99 under the target) and the latency at half of it.
    #[arg(long)]
    pub search: bool,
    /// The p99 send-to-delivery latency a sustained rate must stay under.
    #[arg(long, default_value_t = 50.0)]
    pub p99_target_ms: f64,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Characters per message.
    #[arg(long, default_value_t = 100)]
    pub content_chars: usize,
    /// Processes whose CPU time to count: name=pid or name=comm:<command>, repeatable.
    #[arg(long = "watch", value_parser = measure::parse_watch)]
    pub watch: Vec<(String, Select)>,
    /// RabbitMQ's management API and vhost (`http://user:pass@host:15672/vhost`), to count the
    /// broker messages one chat message costs.
    #[arg(long)]
    pub rabbitmq_api: Option<String>,
    /// The system's database (`postgres://...`), to count the transactions one chat message
    /// costs (closed-loop run only), from `pg_stat_database`.
    #[arg(long)]
    pub database_url: Option<String>,
    /// With `--search`: after the search, offer this many times the ceiling for
    /// `--overload-seconds`, then measure the latency at half the sustained rate again.
    #[arg(long)]
    pub overload: Option<f64>,
    #[arg(long, default_value_t = 20.0)]
    pub overload_seconds: f64,
    /// A broker outage of this many seconds during the run: `--outage-stop` runs
    /// `--outage-at` seconds into the measured run, `--outage-start` this long after it
    /// returned. Receivers catch up on `sync:required`, so `lost` counts what a client that
    /// follows the contract never gets.
    #[arg(long)]
    pub outage_seconds: Option<f64>,
    /// Seconds into the measured run at which the outage begins.
    #[arg(long, default_value_t = 5.0)]
    pub outage_at: f64,
    #[arg(long, default_value = "rabbitmqctl stop_app")]
    pub outage_stop: String,
    #[arg(long, default_value = "rabbitmqctl start_app")]
    pub outage_start: String,
}

/// One measured run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    /// `window N` or `rate R`.
    pub mode: String,
    pub target_rate: Option<f64>,
    pub measured_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// Sends answered with an error (e.g. `timeout`, `unavailable`), by code.
    pub errors: HashMap<String, u64>,
    pub sends_acked_per_s: f64,
    pub deliveries_per_s: f64,
    /// Send to delivery at the receiving client.
    pub latency: Latency,
    /// Send to acknowledgement at the sender.
    pub ack_latency: Latency,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Ticks of an open-loop sender skipped because it already had too many sends unanswered.
    pub skipped: u64,
    pub cpu: CpuUse,
    /// CPU microseconds per acknowledged message, summed over the watched processes.
    pub cpu_us_per_message: f64,
    /// The same, for every busy CPU second of the machine (the load generator included).
    pub machine_cpu_us_per_message: f64,
    /// Broker messages per chat message, when `--rabbitmq-api` is given (closed-loop run only).
    pub broker: Option<BrokerCount>,
    /// Database transactions per chat message, when `--database-url` is given (closed-loop
    /// run only).
    pub transactions: Option<TransactionCount>,
    /// The largest resident set of each watched group during the run (sampled every 250 ms).
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// Seconds from the end of sending to the last answer and the last delivery: how long the
    /// system took to catch up with what it had accepted.
    pub drain_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub conversations: usize,
    pub window: usize,
    pub content_chars: usize,
    pub runs: Vec<Run>,
    /// From `--search`: the highest open-loop rate whose p99 stayed under the target.
    pub max_sustained_rate: Option<f64>,
    /// From `--search`: the run at half of `max_sustained_rate`.
    pub at_half: Option<Run>,
    /// From `--overload`: the run offering that many times the ceiling.
    pub overload: Option<Run>,
    /// From `--overload`: half the sustained rate again, measured from 5 s after the overload's
    /// last answer and delivery.
    pub recovery: Option<Run>,
    /// From `--outage-seconds`: how the run went through the broker's outage.
    pub outage: Option<Outage>,
}

/// A broker outage during a run (issue 16's target: sends acked again within 2 s of the
/// broker's return, and nothing acknowledged missed).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outage {
    /// How long the broker was stopped (from the stop command's return to the start command's).
    pub seconds: f64,
    /// From the broker's return (the start command returned) to the first acknowledgement of a
    /// send made after it.
    pub acked_again_after_s: Option<f64>,
    /// Sends made 2 s or more after the broker's return that failed.
    pub failed_2s_after_return: u64,
    /// `sync:required` events the receivers got, and the messages their catch-up fetched that
    /// had not arrived live.
    pub sync_required: u64,
    pub caught_up: u64,
}

/// What one conversation's receiver and sender have seen.
#[derive(Default)]
struct Conversation {
    last_seq: u64,
    acked: HashSet<String>,
    delivered: HashSet<String>,
    duplicated: u64,
    out_of_order: u64,
}

/// Counters shared by every socket of the scenario.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    skipped: AtomicU64,
    latency: Mutex<Recorder>,
    ack_latency: Mutex<Recorder>,
    errors: Mutex<HashMap<String, u64>>,
    /// `measure::now_micros` when the broker came back from an outage; 0 before.
    returned_at: AtomicU64,
    /// The earliest answer to a send made after `returned_at`; `u64::MAX` until one.
    first_ack_after_return: AtomicU64,
    failed_2s_after_return: AtomicU64,
    sync_required: AtomicU64,
    caught_up: AtomicU64,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<Report> {
    let system = System::new(args.system.clone());
    let pairs: Vec<(String, String)> = (0..args.conversations)
        .map(|i| (system.user(&format!("a{i}")), system.user(&format!("b{i}"))))
        .collect();
    eprintln!("chat: creating {} conversations", pairs.len());
    let ids =
        system.create_conversations(pairs.iter().map(|(a, b)| vec![a.clone(), b.clone()]).collect()).await?;

    let shared = Arc::new(Shared::default());
    let conversations: Vec<Arc<Mutex<Conversation>>> =
        (0..ids.len()).map(|_| Arc::new(Mutex::new(Conversation::default()))).collect();

    // Receivers first, so nothing is sent before someone listens; with two or more edges the
    // receiver sits on another edge than its sender, so every message crosses edges.
    eprintln!("chat: connecting {} receivers and {} senders", ids.len(), ids.len());
    let receivers_users: Vec<String> = pairs.iter().map(|(_, b)| b.clone()).collect();
    // A receiver told `sync:required` catches its conversation up (below), as the contract asks.
    let (catch_up, mut to_catch_up) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let receivers = connect_all(&system, &receivers_users, 64, |i| {
        let conversation = conversations[i].clone();
        let shared = shared.clone();
        let catch_up = catch_up.clone();
        Arc::new(move |event: &str, data: &RawValue| match event {
            "message:new" => on_message(&shared, &conversation, data),
            "sync:required" => {
                shared.sync_required.fetch_add(1, Relaxed);
                let _ = catch_up.send(i);
            }
            _ => {}
        })
    })
    .await?;
    let receivers = Arc::new(receivers);
    let catching_up = {
        let (receivers, conversations, ids, shared) =
            (receivers.clone(), conversations.clone(), ids.clone(), shared.clone());
        tokio::spawn(async move {
            while let Some(i) = to_catch_up.recv().await {
                let (socket, conversation) = (&receivers[i], &conversations[i]);
                if let Err(error) = fetch_missed(socket, &ids[i], conversation, &shared).await {
                    eprintln!("chat: a catch-up failed: {error:#}");
                }
            }
        })
    };
    let senders_users: Vec<String> = pairs.iter().map(|(a, _)| a.clone()).collect();
    let senders = futures::future::try_join_all(
        senders_users.iter().enumerate().map(|(i, user)| system.connect(i + 1, user, noop())),
    )
    .await?;
    let senders: Vec<Sender> = senders
        .into_iter()
        .zip(ids.iter())
        .zip(conversations.iter())
        .map(|((socket, id), conversation)| Sender {
            socket,
            conversation_id: id.clone(),
            conversation: conversation.clone(),
            shared: shared.clone(),
            content_chars: args.content_chars,
        })
        .collect();
    // Let the presence announcements of all those connects pass before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut runs = Vec::new();
    let mut report = Report {
        conversations: args.conversations,
        window: args.window,
        content_chars: args.content_chars,
        runs: Vec::new(),
        max_sustained_rate: None,
        at_half: None,
        overload: None,
        recovery: None,
        outage: None,
    };
    let rabbit = args.rabbitmq_api.as_deref().map(broker::Management::parse).transpose()?;
    let database = args.database_url.as_deref().map(Database::new);
    let counters = Counters { rabbit: rabbit.as_ref(), database: database.as_ref() };
    if args.search {
        let ceiling =
            measure_run(&args, &senders, &conversations, &shared, Load::Window(args.window), counters)
                .await?;
        let ceiling_rate = ceiling.sends_acked_per_s;
        runs.push(ceiling);
        let mut sustained = None;
        for step in [0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.1] {
            let rate = (ceiling_rate * step).round();
            let run = measure_run(&args, &senders, &conversations, &shared, Load::Rate(rate), Counters::NONE)
                .await?;
            let holds = run.latency.p99_ms < args.p99_target_ms && run.sends_acked_per_s >= 0.97 * rate;
            runs.push(run);
            if holds {
                sustained = Some(rate);
                break;
            }
        }
        let half_rate = sustained.map(|rate| (rate / 2.0).round());
        if let Some(rate) = half_rate {
            let half =
                measure_run(&args, &senders, &conversations, &shared, Load::Rate(rate), Counters::NONE)
                    .await?;
            report.at_half = Some(half);
        }
        report.max_sustained_rate = sustained;
        if let Some(factor) = args.overload {
            let over = ChatArgs { warmup: 0.0, duration: args.overload_seconds, ..args.clone() };
            let rate = (ceiling_rate * factor).round();
            let overload =
                measure_run(&over, &senders, &conversations, &shared, Load::Rate(rate), Counters::NONE)
                    .await?;
            // Back to an ordinary load once the overload drained (its `drain_s`): measured from
            // 5 s on.
            let after = ChatArgs { warmup: 5.0, duration: 5.0, ..args.clone() };
            let rate = half_rate.unwrap_or((ceiling_rate * 0.25).round());
            let recovery =
                measure_run(&after, &senders, &conversations, &shared, Load::Rate(rate), Counters::NONE)
                    .await?;
            report.overload = Some(overload);
            report.recovery = Some(recovery);
        }
    } else if let Some(seconds) = args.outage_seconds {
        let load = args.rate.map_or(Load::Window(args.window), Load::Rate);
        let outage = async {
            tokio::time::sleep(Duration::from_secs_f64(args.warmup + args.outage_at)).await;
            outage(&args, seconds, &shared).await
        };
        let (run, seconds) =
            tokio::join!(measure_run(&args, &senders, &conversations, &shared, load, counters), outage);
        let returned = shared.returned_at.load(Relaxed);
        let first = shared.first_ack_after_return.load(Relaxed);
        report.outage = Some(Outage {
            seconds: seconds?,
            acked_again_after_s: (returned > 0 && first != u64::MAX)
                .then(|| first.saturating_sub(returned) as f64 / 1e6),
            failed_2s_after_return: shared.failed_2s_after_return.load(Relaxed),
            sync_required: shared.sync_required.load(Relaxed),
            caught_up: shared.caught_up.load(Relaxed),
        });
        runs.push(run?);
    } else {
        let load = args.rate.map_or(Load::Window(args.window), Load::Rate);
        runs.push(measure_run(&args, &senders, &conversations, &shared, load, counters).await?);
    }
    report.runs = runs;
    catching_up.abort();
    for socket in receivers.iter().chain(senders.iter().map(|s| &s.socket)) {
        socket.close();
    }
    Ok(report)
}

/// Stops the broker for `seconds` with the configured commands; returns how long it was down.
async fn outage(args: &ChatArgs, seconds: f64, shared: &Shared) -> anyhow::Result<f64> {
    let run = |command: &str| {
        let command = command.to_owned();
        async move {
            let status = tokio::process::Command::new("sh").arg("-c").arg(&command).status().await?;
            anyhow::ensure!(status.success(), "`{command}` failed: {status}");
            Ok(())
        }
    };
    eprintln!("chat: stopping the broker for {seconds} s");
    run(&args.outage_stop).await?;
    let stopped = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    run(&args.outage_start).await?;
    shared.returned_at.store(measure::now_micros(), Relaxed);
    eprintln!("chat: the broker is back");
    Ok(stopped.elapsed().as_secs_f64())
}

/// A receiver's catch-up after `sync:required`: every message of its conversation, page by
/// page, counted as delivered (what had not arrived live counts as caught up).
async fn fetch_missed(
    socket: &Socket,
    conversation_id: &str,
    conversation: &Mutex<Conversation>,
    shared: &Shared,
) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        success: bool,
        #[serde(default)]
        messages: Vec<Synced>,
        #[serde(default)]
        has_more: bool,
    }
    #[derive(Deserialize)]
    struct Synced {
        id: String,
        seq: u64,
    }
    let mut after = 0;
    loop {
        let reply = socket
            .ask(
                "messages:sync",
                &json!({ "conversationId": conversation_id, "afterSeq": after, "limit": 200 }),
            )
            .await?;
        let page: Page = serde_json::from_str(&reply).context("a messages:sync reply")?;
        anyhow::ensure!(page.success, "messages:sync failed: {reply}");
        {
            let mut c = conversation.lock().expect("not poisoned");
            for message in &page.messages {
                if c.delivered.insert(message.id.clone()) {
                    shared.caught_up.fetch_add(1, Relaxed);
                    shared.delivered.fetch_add(1, Relaxed);
                }
                c.last_seq = c.last_seq.max(message.seq);
                after = message.seq;
            }
        }
        if !page.has_more || page.messages.is_empty() {
            return Ok(());
        }
    }
}

fn noop() -> crate::sio::OnEvent {
    Arc::new(|_: &str, _: &RawValue| {})
}

fn on_message(shared: &Shared, conversation: &Mutex<Conversation>, data: &RawValue) {
    #[derive(Deserialize)]
    struct New<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        seq: u64,
        #[serde(borrow)]
        content: Cow<'a, str>,
    }
    let Ok(message) = serde_json::from_str::<New>(data.get()) else { return };
    {
        let mut c = conversation.lock().expect("not poisoned");
        if message.seq != c.last_seq + 1 {
            c.out_of_order += 1;
        }
        c.last_seq = c.last_seq.max(message.seq);
        if !c.delivered.insert(message.id.into_owned()) {
            c.duplicated += 1;
        }
    }
    shared.delivered.fetch_add(1, Relaxed);
    if shared.measuring.load(Relaxed)
        && let Some(age) = measure::age_micros(&message.content)
    {
        shared.latency.lock().expect("not poisoned").record_micros(age);
    }
}

#[derive(Clone, Copy, Debug)]
enum Load {
    Window(usize),
    Rate(f64),
}

struct Sender {
    socket: Socket,
    conversation_id: String,
    conversation: Arc<Mutex<Conversation>>,
    shared: Arc<Shared>,
    content_chars: usize,
}

/// The most sends an open-loop sender leaves unanswered before it skips ticks.
const OPEN_LOOP_CAP: usize = 512;

impl Sender {
    async fn send_one(&self, n: u64) {
        let (sent, content) = measure::stamped(n, self.content_chars);
        let payload = json!({
            "conversationId": self.conversation_id,
            "content": content,
            "clientMessageId": format!("m{n}"),
        });
        self.shared.sent.fetch_add(1, Relaxed);
        let reply = self.socket.ask("message:send", &payload).await;
        let answered = measure::now_micros();
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Ack {
            success: bool,
            message_id: Option<String>,
            error: Option<Value>,
        }
        let returned = self.shared.returned_at.load(Relaxed);
        let code = match reply.as_deref().map(serde_json::from_str::<Ack>) {
            Ok(Ok(Ack { success: true, message_id: Some(id), .. })) => {
                if returned > 0 && sent >= returned {
                    self.shared.first_ack_after_return.fetch_min(answered, Relaxed);
                }
                self.conversation.lock().expect("not poisoned").acked.insert(id);
                self.shared.acked.fetch_add(1, Relaxed);
                if self.shared.measuring.load(Relaxed) {
                    self.shared.ack_latency.lock().expect("not poisoned").record_micros(answered - sent);
                }
                return;
            }
            Ok(Ok(Ack { error, .. })) => {
                error.and_then(|e| e.get("code")?.as_str().map(str::to_owned)).unwrap_or("malformed".into())
            }
            Ok(Err(_)) => "malformed".to_owned(),
            Err(_) => "disconnected".to_owned(),
        };
        if returned > 0 && sent >= returned + 2_000_000 {
            self.shared.failed_2s_after_return.fetch_add(1, Relaxed);
        }
        *self.shared.errors.lock().expect("not poisoned").entry(code).or_default() += 1;
    }

    /// Sends until `stop`, then waits for every outstanding ack.
    async fn drive(&self, load: Load, per_sender_rate: f64, stop: CancellationToken, first: u64) -> u64 {
        let mut n = first;
        let mut in_flight = FuturesUnordered::new();
        match load {
            Load::Window(window) => loop {
                while in_flight.len() < window && !stop.is_cancelled() {
                    n += 1;
                    in_flight.push(self.send_one(n));
                }
                tokio::select! {
                    Some(()) = in_flight.next() => {}
                    () = stop.cancelled(), if !in_flight.is_empty() => {}
                    else => break,
                }
                if stop.is_cancelled() && in_flight.is_empty() {
                    break;
                }
            },
            Load::Rate(_) => {
                let period = Duration::from_secs_f64(1.0 / per_sender_rate.max(0.001));
                // Spread the senders' first ticks over one period so they do not send in step.
                let offset = period.mul_f64(fastrand::f64());
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                loop {
                    tokio::select! {
                        _ = tick.tick(), if !stop.is_cancelled() => {
                            if in_flight.len() < OPEN_LOOP_CAP {
                                n += 1;
                                in_flight.push(self.send_one(n));
                            } else {
                                self.shared.skipped.fetch_add(1, Relaxed);
                            }
                        }
                        Some(()) = in_flight.next() => {}
                        () = stop.cancelled(), if !in_flight.is_empty() => {}
                        else => break,
                    }
                    if stop.is_cancelled() && in_flight.is_empty() {
                        break;
                    }
                }
            }
        }
        n
    }
}

/// The next client message number of each sender, kept across runs so ids stay unique.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The broker's and the database's own counters, read around a run when given.
#[derive(Clone, Copy)]
struct Counters<'a> {
    rabbit: Option<&'a broker::Management>,
    database: Option<&'a Database>,
}

impl Counters<'_> {
    const NONE: Counters<'static> = Counters { rabbit: None, database: None };
}

async fn measure_run(
    args: &ChatArgs,
    senders: &[Sender],
    conversations: &[Arc<Mutex<Conversation>>],
    shared: &Arc<Shared>,
    load: Load,
    counters: Counters<'_>,
) -> anyhow::Result<Run> {
    let (mode, target_rate) = match load {
        Load::Window(w) => (format!("window {w}"), None),
        Load::Rate(r) => (format!("rate {r}"), Some(r)),
    };
    eprintln!("chat: run {mode} for {} s (+{} s warm-up)", args.duration, args.warmup);
    reset(shared, conversations);
    let (broker_before, transactions_before) = tokio::join!(
        async {
            match counters.rabbit {
                Some(api) => api.counts().await.context("reading the broker's counts").map(Some),
                None => Ok(None),
            }
        },
        async {
            match counters.database {
                Some(database) => database.transactions().await.map(Some),
                None => Ok(None),
            }
        }
    );
    let (broker_before, transactions_before) = (broker_before?, transactions_before?);
    let stop = CancellationToken::new();
    let per_sender = target_rate.unwrap_or(0.0) / senders.len().max(1) as f64;
    // Each run's client message numbers start past the previous run's: a reused
    // clientMessageId would (rightly) be answered with the original message.
    let first = NEXT.fetch_add(10_000_000, Relaxed);
    let driving =
        futures::future::join_all(senders.iter().map(|s| s.drive(load, per_sender, stop.clone(), first)));
    let measuring = async {
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let before =
            (measure::snapshot(&args.watch), shared.acked.load(Relaxed), shared.delivered.load(Relaxed));
        shared.measuring.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        shared.measuring.store(false, Relaxed);
        let after =
            (measure::snapshot(&args.watch), shared.acked.load(Relaxed), shared.delivered.load(Relaxed));
        stop.cancel();
        (before, after, std::time::Instant::now())
    };
    let sampling = async {
        let mut peak: BTreeMap<String, u64> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !stop.is_cancelled() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            for (name, usage) in measure::snapshot(&args.watch).groups {
                let top = peak.entry(name).or_default();
                *top = (*top).max(usage.rss_kib);
            }
        }
        peak
    };
    let (_, (before, after, stopped), peak_rss_kib) = tokio::join!(driving, measuring, sampling);
    let cpu = measure::cpu_between(&before.0, &after.0);
    let acked_in_window = after.1 - before.1;
    let delivered_in_window = after.2 - before.2;

    // Everything sent has been answered; wait for the deliveries of what was acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && undelivered(conversations) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = stopped.elapsed().as_secs_f64();
    // Then a little longer, so a duplicate that is on its way is counted too.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = shared.acked.load(Relaxed);
    let (broker, transactions) = tokio::join!(
        async {
            match (counters.rabbit, broker_before) {
                (Some(api), Some(before)) => {
                    api.per_message(before, acked).await.context("reading the broker's counts").map(Some)
                }
                _ => Ok(None),
            }
        },
        async {
            match (counters.database, transactions_before) {
                (Some(database), Some(before)) => database.per_message(before, acked).await.map(Some),
                _ => Ok(None),
            }
        }
    );
    let (broker, transactions) = (broker?, transactions?);
    let mut run = Run {
        mode,
        target_rate,
        measured_s: cpu.seconds,
        sent: shared.sent.load(Relaxed),
        acked: shared.acked.load(Relaxed),
        errors: shared.errors.lock().expect("not poisoned").clone(),
        sends_acked_per_s: acked_in_window as f64 / cpu.seconds,
        deliveries_per_s: delivered_in_window as f64 / cpu.seconds,
        latency: shared.latency.lock().expect("not poisoned").summary(),
        ack_latency: shared.ack_latency.lock().expect("not poisoned").summary(),
        skipped: shared.skipped.load(Relaxed),
        cpu_us_per_message: cpu.watched_s * 1e6 / acked_in_window.max(1) as f64,
        machine_cpu_us_per_message: cpu.machine_s * 1e6 / acked_in_window.max(1) as f64,
        cpu,
        broker,
        transactions,
        peak_rss_kib,
        drain_s,
        ..Run::default()
    };
    for conversation in conversations {
        let c = conversation.lock().expect("not poisoned");
        run.lost += c.acked.difference(&c.delivered).count() as u64;
        run.duplicated += c.duplicated;
        run.out_of_order += c.out_of_order;
    }
    eprintln!(
        "chat: {:.0} acked/s, p99 {:.1} ms, lost {} duplicated {} out of order {}",
        run.sends_acked_per_s, run.latency.p99_ms, run.lost, run.duplicated, run.out_of_order
    );
    Ok(run)
}

fn undelivered(conversations: &[Arc<Mutex<Conversation>>]) -> usize {
    conversations
        .iter()
        .map(|c| {
            let c = c.lock().expect("not poisoned");
            c.acked.difference(&c.delivered).count()
        })
        .sum()
}

fn reset(shared: &Shared, conversations: &[Arc<Mutex<Conversation>>]) {
    shared.sent.store(0, Relaxed);
    shared.acked.store(0, Relaxed);
    shared.delivered.store(0, Relaxed);
    shared.skipped.store(0, Relaxed);
    *shared.latency.lock().expect("not poisoned") = Recorder::default();
    *shared.ack_latency.lock().expect("not poisoned") = Recorder::default();
    shared.errors.lock().expect("not poisoned").clear();
    shared.returned_at.store(0, Relaxed);
    shared.first_ack_after_return.store(u64::MAX, Relaxed);
    shared.failed_2s_after_return.store(0, Relaxed);
    for conversation in conversations {
        let mut c = conversation.lock().expect("not poisoned");
        c.acked.clear();
        c.delivered.clear();
        c.duplicated = 0;
        c.out_of_order = 0;
    }
}
