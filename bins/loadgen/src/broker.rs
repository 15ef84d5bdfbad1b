//! RabbitMQ on its own: what it sustains here for persistent publishes with confirms and
//! consumes with acks through one queue (the `broker` scenario), what the AMQP client itself
//! costs per message with either client library (`--client`), and how many broker messages
//! the system spends per chat message (read from the management API).

mod with_amqprs;

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use futures::{StreamExt as _, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, clap::Args)]
pub struct BrokerArgs {
    /// The broker, with the vhost to use.
    #[arg(long, env = "LOADGEN_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publishes awaiting their confirm at any time.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// The consumer's prefetch.
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// Bytes per message (about one chat message in our envelope).
    #[arg(long, default_value_t = 400)]
    pub size: usize,
    /// The AMQP client library that drives the workload.
    #[arg(long, value_enum, default_value_t = Client::Lapin)]
    pub client: Client,
    /// Publish at this many messages per second (open loop, still at most `window` awaiting
    /// their confirm) instead of as fast as the window allows: the per-message costs of a
    /// system at an ordinary rate, where nothing is amortised over a burst.
    #[arg(long)]
    pub rate: Option<f64>,
    /// What our messages carry, one at a time, to see what each costs RabbitMQ (these five
    /// with lapin only):
    /// a per-message `expiration`, ...
    #[arg(long)]
    pub expiration_ms: Option<u32>,
    /// ... the `mandatory` flag, ...
    #[arg(long)]
    pub mandatory: bool,
    /// ... delivery mode 1 instead of 2, ...
    #[arg(long)]
    pub transient: bool,
    /// ... a queue with single-active-consumer, as the chat shards are, ...
    #[arg(long)]
    pub single_active_consumer: bool,
    /// ... or a queue that is not durable, as an edge's own queue is.
    #[arg(long)]
    pub non_durable_queue: bool,
}

/// The AMQP clients the scenario can compare; the workload is the same for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// lapin, publisher and consumer on a connection each (what our services do).
    Lapin,
    /// lapin, both channels on one connection: one socket and one I/O loop fewer.
    LapinOneConnection,
    /// amqprs, publisher and consumer on a connection each.
    Amqprs,
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokerReport {
    pub client: Client,
    pub measured_s: f64,
    pub size: usize,
    pub window: usize,
    pub prefetch: u16,
    pub published_confirmed: u64,
    pub consumed_acked: u64,
    pub publish_per_s: f64,
    pub consume_per_s: f64,
    /// The load generator's own CPU (user + system) over the measured window.
    pub client_cpu_s: f64,
    /// That CPU per message published and consumed: µs ÷ (published + consumed) × 2.
    pub client_cpu_us_per_message: f64,
    /// Context switches of all the process's threads, per message published and consumed.
    pub voluntary_switches_per_message: f64,
    pub involuntary_switches_per_message: f64,
    /// RabbitMQ's CPU (`beam.smp`, if it runs on this machine) over the whole run, setup and
    /// teardown included, per message published and consumed.
    pub broker_cpu_us_per_message: f64,
    /// `--rate`, when the publishes were paced.
    pub rate: Option<f64>,
}

/// What one client counted over the measured window.
struct Counted {
    published: u64,
    published_in: Duration,
    consumed: u64,
    consumed_in: Duration,
    usage: Usage,
}

/// Publishes persistent messages with confirms into one durable queue while another channel
/// consumes and acks them, for `duration` seconds, with the client `--client` names.
pub async fn baseline(args: BrokerArgs) -> anyhow::Result<BrokerReport> {
    let queue = format!("loadgen.baseline.{:06x}", fastrand::u32(..0xff_ffff));
    // RabbitMQ's own CPU (every `beam.smp` on this machine), around the whole run.
    let broker = [("rabbitmq".to_owned(), crate::measure::Select::Comm("beam.smp".to_owned()))];
    let broker_before = crate::measure::snapshot(&broker);
    let counted = match args.client {
        Client::Lapin => with_lapin(&args, &queue, false).await?,
        Client::LapinOneConnection => with_lapin(&args, &queue, true).await?,
        Client::Amqprs => with_amqprs::run(&args, &queue).await?,
    };
    let Counted { published, published_in, consumed, consumed_in, usage } = counted;
    let broker_cpu_s =
        crate::measure::cpu_between(&broker_before, &crate::measure::snapshot(&broker)).watched_s;
    // Both halves of the workload are in the CPU figure, so it is shared by the messages
    // published and consumed; × 2 makes it the cost of one message that went both ways.
    let per_message = |n: f64| n / (published + consumed).max(1) as f64 * 2.0;
    let cpu_s = usage.cpu_ticks as f64 / CLOCK_TICKS_PER_S;
    Ok(BrokerReport {
        client: args.client,
        measured_s: published_in.as_secs_f64(),
        size: args.size,
        window: args.window,
        prefetch: args.prefetch,
        published_confirmed: published,
        consumed_acked: consumed,
        publish_per_s: published as f64 / published_in.as_secs_f64(),
        consume_per_s: consumed as f64 / consumed_in.as_secs_f64(),
        client_cpu_s: cpu_s,
        client_cpu_us_per_message: per_message(cpu_s * 1e6),
        voluntary_switches_per_message: per_message(usage.voluntary as f64),
        involuntary_switches_per_message: per_message(usage.involuntary as f64),
        broker_cpu_us_per_message: per_message(broker_cpu_s * 1e6),
        rate: args.rate,
    })
}

/// The workload with lapin; `one_connection` puts the consumer's channel on the publisher's
/// connection.
async fn with_lapin(args: &BrokerArgs, queue: &str, one_connection: bool) -> anyhow::Result<Counted> {
    let publisher = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    // Each lapin connection has an I/O thread of its own: one connection means one thread fewer
    // for every message to cross.
    let consumer_connection = if one_connection {
        None
    } else {
        Some(Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?)
    };
    let channel = publisher.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut queue_args = FieldTable::default();
    if args.single_active_consumer {
        queue_args.insert("x-single-active-consumer".into(), lapin::types::AMQPValue::Boolean(true));
    }
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { durable: !args.non_durable_queue, ..Default::default() },
            queue_args,
        )
        .await?;
    let mut properties = BasicProperties::default().with_delivery_mode(if args.transient { 1 } else { 2 });
    if let Some(expiration) = args.expiration_ms {
        properties = properties.with_expiration(expiration.to_string().into());
    }
    let options = BasicPublishOptions { mandatory: args.mandatory, ..Default::default() };
    let mut pace =
        args.rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001))));
    let consuming = consumer_connection.as_ref().unwrap_or(&publisher).create_channel().await?;
    consuming.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let mut consumer = consuming
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;

    let body = vec![b'x'; args.size];
    let before = Usage::now()?;
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let consume = async {
        let mut consumed = 0u64;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
        {
            delivery.acker.ack(BasicAckOptions::default()).await?;
            consumed += 1;
            if started.elapsed() >= duration {
                break;
            }
        }
        Ok::<_, anyhow::Error>((consumed, started.elapsed()))
    };
    let publish = async {
        let mut confirmed = 0u64;
        let mut pending = FuturesUnordered::new();
        while started.elapsed() < duration {
            if let Some(pace) = pace.as_mut() {
                // Open loop: one publish per tick, confirms settled as they come.
                tokio::select! {
                    _ = pace.tick(), if pending.len() < args.window => {
                        pending.push(channel.basic_publish("".into(), queue.into(), options, &body, properties.clone()).await?);
                        continue;
                    }
                    Some(confirmation) = pending.next() => {
                        if confirmation?.is_ack() { confirmed += 1 } else { return Err(anyhow!("the broker refused a publish")) }
                        continue;
                    }
                }
            }
            while pending.len() < args.window {
                let confirm = channel
                    .basic_publish("".into(), queue.into(), options, &body, properties.clone())
                    .await?;
                pending.push(confirm);
            }
            if let Some(confirmation) = pending.next().await {
                if confirmation?.is_ack() {
                    confirmed += 1;
                } else {
                    return Err(anyhow!("the broker refused a publish"));
                }
            }
        }
        let elapsed = started.elapsed();
        while let Some(confirmation) = pending.next().await {
            confirmation?;
        }
        Ok::<_, anyhow::Error>((confirmed, elapsed))
    };
    let ((published, published_in), (consumed, consumed_in)) = tokio::try_join!(publish, consume)?;
    // Read once both loops are done, so it includes the last window's confirms (at most
    // `window` more than counted): a bias of well under 1% at the rates seen here.
    let usage = Usage::now()?.since(before);
    channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
    if let Some(connection) = consumer_connection {
        let _ = connection.close(200, "done".into()).await;
    }
    let _ = publisher.close(200, "done".into()).await;
    Ok(Counted { published, published_in, consumed, consumed_in, usage })
}

/// `/proc/self/stat` counts CPU time in clock ticks: `USER_HZ`, 100 on Linux everywhere.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// What the whole process has spent so far, from procfs, so that the client's cost is read
/// the same way whatever threads and tasks the client library runs.
#[derive(Clone, Copy, Debug)]
struct Usage {
    /// utime + stime of all threads, in clock ticks.
    cpu_ticks: u64,
    voluntary: u64,
    involuntary: u64,
}

impl Usage {
    fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // The command name in parentheses may hold spaces: fields are counted after it, from
        // the state (field 3); utime and stime are fields 14 and 15.
        let after_name = stat.rsplit_once(')').context("/proc/self/stat has no command name")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| -> anyhow::Result<u64> {
            Ok(fields.get(n - 3).context("/proc/self/stat is short")?.parse()?)
        };
        let cpu_ticks = field(14)? + field(15)?;
        // `/proc/self/status` counts the switches of the main thread only, so add up those of
        // every thread (a thread that exits before the second reading takes its own with it).
        let (mut voluntary, mut involuntary) = (0, 0);
        for task in std::fs::read_dir("/proc/self/task")? {
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
            for line in status.lines() {
                if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
                    voluntary += n.trim().parse::<u64>()?;
                } else if let Some(n) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                    involuntary += n.trim().parse::<u64>()?;
                }
            }
        }
        Ok(Self { cpu_ticks, voluntary, involuntary })
    }

    fn since(self, before: Self) -> Self {
        Self {
            cpu_ticks: self.cpu_ticks.saturating_sub(before.cpu_ticks),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }
}

/// RabbitMQ's management API for one vhost.
pub struct Management {
    base: String,
    user: String,
    password: String,
    vhost: String,
    http: reqwest::Client,
}

/// Messages the broker carried while the system handled `chat_messages`.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerCount {
    pub chat_messages: u64,
    pub published: u64,
    pub delivered: u64,
    pub published_per_message: f64,
    pub delivered_per_message: f64,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Counts {
    #[serde(default)]
    publish: u64,
    #[serde(default)]
    deliver_get: u64,
}

/// How often the management plugin refreshes its counters (RabbitMQ's default), plus a margin.
const STATISTICS_LAG: Duration = Duration::from_millis(6_000);

impl Management {
    /// Parses `http://user:password@host:port/vhost`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").context("the management API URL starts with http://")?;
        let (credentials, rest) =
            rest.split_once('@').context("the management API URL names user:password@")?;
        let (user, password) = credentials.split_once(':').context("user:password")?;
        let (host, vhost) = rest.split_once('/').unwrap_or((rest, "%2f"));
        Ok(Self {
            base: format!("http://{host}"),
            user: user.to_owned(),
            password: password.to_owned(),
            vhost: if vhost.is_empty() { "%2f".to_owned() } else { vhost.to_owned() },
            http: reqwest::Client::new(),
        })
    }

    /// The vhost's message counters, once the plugin has caught up with what just happened.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        tokio::time::sleep(STATISTICS_LAG).await;
        #[derive(Deserialize)]
        struct Vhost {
            #[serde(default)]
            message_stats: Counts,
        }
        let vhost: Vhost = self
            .http
            .get(format!("{}/api/vhosts/{}", self.base, self.vhost))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(vhost.message_stats)
    }

    pub async fn per_message(&self, before: Counts, chat_messages: u64) -> anyhow::Result<BrokerCount> {
        let after = self.counts().await?;
        let published = after.publish - before.publish;
        let delivered = after.deliver_get - before.deliver_get;
        let per = |n: u64| n as f64 / chat_messages.max(1) as f64;
        Ok(BrokerCount {
            chat_messages,
            published,
            delivered,
            published_per_message: per(published),
            delivered_per_message: per(delivered),
        })
    }
}
