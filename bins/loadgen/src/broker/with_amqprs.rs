//! The broker workload with the `amqprs` client, to compare what it costs per message with
//! lapin's. amqprs does not hand back a future per publish: confirms reach a channel callback,
//! so the window of unconfirmed publishes is kept here.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use amqprs::{
    Ack, BasicProperties, Cancel, CloseChannel, DELIVERY_MODE_PERSISTENT, Nack, Return,
    callbacks::ChannelCallback,
    channel::{
        BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
        ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments,
    },
    connection::{Connection, OpenConnectionArguments},
};
use anyhow::{Context as _, bail};
use tokio::sync::Semaphore;

use super::{BrokerArgs, Counted, Usage};

pub(super) async fn run(args: &BrokerArgs, queue: &str) -> anyhow::Result<Counted> {
    let connect = connection_arguments(&args.amqp_url)?;
    let publisher = Connection::open(&connect).await?;
    let consumer_connection = Connection::open(&connect).await?;

    let channel = publisher.open_channel(None).await?;
    let confirms = Arc::new(Confirms::new(args.window));
    // Registered before confirm mode is on, so that no confirm can arrive unseen.
    channel.register_callback(ConfirmCallback(confirms.clone())).await?;
    channel.confirm_select(ConfirmSelectArguments::default()).await?;
    channel.queue_declare(QueueDeclareArguments::durable_client_named(queue)).await?;

    let consuming = consumer_connection.open_channel(None).await?;
    consuming.basic_qos(BasicQosArguments::new(0, args.prefetch, false)).await?;
    let (_tag, mut deliveries) =
        consuming.basic_consume_rx(BasicConsumeArguments::new(queue, "").manual_ack(true).finish()).await?;

    let body = vec![b'x'; args.size];
    let properties = BasicProperties::default().with_delivery_mode(DELIVERY_MODE_PERSISTENT).finish();
    let publish_to = BasicPublishArguments::new("", queue);
    let before = Usage::now()?;
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let consume = async {
        let mut consumed = 0u64;
        while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), deliveries.recv()).await {
            let tag = message.deliver.context("a delivery without its method")?.delivery_tag();
            consuming.basic_ack(BasicAckArguments::new(tag, false)).await?;
            consumed += 1;
            if started.elapsed() >= duration {
                break;
            }
        }
        Ok::<_, anyhow::Error>((consumed, started.elapsed()))
    };
    let publish = async {
        // The broker numbers a confirm-mode channel's publishes 1, 2, … in the order it gets
        // them; ours go out in that order through the one writer task.
        let mut tag = 0u64;
        let mut pace =
            args.rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001))));
        while started.elapsed() < duration {
            if let Some(pace) = pace.as_mut() {
                pace.tick().await;
            }
            confirms.room.acquire().await.context("the channel closed")?.forget();
            confirms.check()?;
            tag += 1;
            confirms.unconfirmed().insert(tag);
            channel.basic_publish(properties.clone(), body.clone(), publish_to.clone()).await?;
        }
        let confirmed = confirms.confirmed.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        // Wait out the window's last confirms, like the lapin run, so none is left in flight
        // when the queue goes.
        let window = u32::try_from(args.window)?;
        tokio::time::timeout(Duration::from_secs(10), confirms.room.acquire_many(window))
            .await
            .context("the last confirms did not come")?
            .context("the channel closed")?
            .forget();
        confirms.check()?;
        Ok::<_, anyhow::Error>((confirmed, elapsed))
    };
    let ((published, published_in), (consumed, consumed_in)) = tokio::try_join!(publish, consume)?;
    // As for lapin: read after the last window's confirms.
    let usage = Usage::now()?.since(before);
    channel.queue_delete(QueueDeleteArguments::new(queue)).await?;
    let _ = consuming.close().await;
    let _ = channel.close().await;
    let _ = consumer_connection.close().await;
    let _ = publisher.close().await;
    Ok(Counted { published, published_in, consumed, consumed_in, usage })
}

/// amqprs reads the vhost from the URL's path as it is written, so `/%2f` would name a vhost
/// `%2f`: decode it the way the AMQP URI spec (and lapin) do.
fn connection_arguments(url: &str) -> anyhow::Result<OpenConnectionArguments> {
    let mut arguments = OpenConnectionArguments::try_from(url)?;
    let vhost = percent_decode(arguments.get_virtual_host())?;
    arguments.virtual_host(&vhost);
    Ok(arguments)
}

fn percent_decode(text: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2).context("a % without two hex digits")?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex)?, 16)?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    Ok(String::from_utf8(bytes)?)
}

/// The publisher's side of confirms, shared with the channel's callback.
struct Confirms {
    /// Delivery tags published and not yet confirmed. A set rather than a count because an
    /// ack or nack may settle one tag or, with `multiple`, every tag up to it.
    unconfirmed: Mutex<BTreeSet<u64>>,
    /// One permit per publish the window still has room for.
    room: Semaphore,
    confirmed: AtomicU64,
    refused: AtomicU64,
}

impl Confirms {
    fn new(window: usize) -> Self {
        Self {
            unconfirmed: Mutex::new(BTreeSet::new()),
            room: Semaphore::new(window),
            confirmed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn unconfirmed(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // Nothing that holds the lock can panic half-way, so a poisoned set is still whole.
        self.unconfirmed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Settles `tag` (and with `multiple` every tag below it); returns how many it settled.
    fn settle(&self, tag: u64, multiple: bool) -> u64 {
        let settled = {
            let mut unconfirmed = self.unconfirmed();
            if multiple {
                let above = unconfirmed.split_off(&(tag + 1));
                std::mem::replace(&mut *unconfirmed, above).len()
            } else {
                usize::from(unconfirmed.remove(&tag))
            }
        };
        self.room.add_permits(settled);
        settled as u64
    }

    fn check(&self) -> anyhow::Result<()> {
        match self.refused.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => bail!("the broker refused {n} publishes"),
        }
    }
}

struct ConfirmCallback(Arc<Confirms>);

#[async_trait::async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        eprintln!("the broker closed the publishing channel: {close}");
        // Wakes the publisher, whose next wait for room then fails.
        self.0.room.close();
        Ok(())
    }

    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        let settled = self.0.settle(ack.delivery_tag(), ack.mutiple());
        self.0.confirmed.fetch_add(settled, Ordering::Relaxed);
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        let settled = self.0.settle(nack.delivery_tag(), nack.multiple());
        self.0.refused.fetch_add(settled, Ordering::Relaxed);
    }

    async fn publish_return(&mut self, _channel: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        // Not mandatory publishes: the broker returns none.
    }
}
