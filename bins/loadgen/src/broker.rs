//! RabbitMQ on its own: what it sustains here for persistent publishes with confirms and
//! consumes with acks through one queue (the `broker` scenario), and how many broker messages
//! the system spends per chat message (read from the management API).

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
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokerReport {
    pub measured_s: f64,
    pub size: usize,
    pub window: usize,
    pub prefetch: u16,
    pub published_confirmed: u64,
    pub consumed_acked: u64,
    pub publish_per_s: f64,
    pub consume_per_s: f64,
}

/// Publishes persistent messages with confirms into one durable queue while another
/// connection consumes and acks them, for `duration` seconds.
pub async fn baseline(args: BrokerArgs) -> anyhow::Result<BrokerReport> {
    let queue = format!("loadgen.baseline.{:06x}", fastrand::u32(..0xff_ffff));
    let publisher = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    let consumer_connection = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    let channel = publisher.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let consuming = consumer_connection.create_channel().await?;
    consuming.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let mut consumer = consuming
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let body = vec![b'x'; args.size];
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
            while pending.len() < args.window {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
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
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    let _ = publisher.close(200, "done".into()).await;
    let _ = consumer_connection.close(200, "done".into()).await;
    Ok(BrokerReport {
        measured_s: published_in.as_secs_f64(),
        size: args.size,
        window: args.window,
        prefetch: args.prefetch,
        published_confirmed: published,
        consumed_acked: consumed,
        publish_per_s: published as f64 / published_in.as_secs_f64(),
        consume_per_s: consumed as f64 / consumed_in.as_secs_f64(),
    })
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
