//! Sharing the chat shards between copies, and consuming the shards this copy owns.
//!
//! Ownership is PostgreSQL advisory locks on one dedicated session (see the crate docs): the
//! shared lock `(LOCK_CLASS, MEMBER)` counts live copies; the exclusive lock
//! `(LOCK_CLASS, shard)` owns a shard. Every [`REBALANCE`] the copy recounts, gives back its
//! surplus and takes free shards up to its share. Losing the session (database restart) stops
//! every shard consumer before anything else is tried, since the locks went with it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use lapin::{Acker, options::BasicAckOptions};
use sqlx::{Connection, PgConnection};
use switchboard::{
    Bus, Shutdown,
    bus::{BusError, Shard, in_time, queues, retry_in_place},
    db::Database,
    trace,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    committer::{self, Committer, Stopped},
    handlers,
};

/// The advisory-lock namespace of the messages worker ("SBMS").
const LOCK_CLASS: i32 = 0x5342_4D53;
/// The shared lock every live copy holds (shards use keys 0..16).
const MEMBER: i32 = 1000;
/// How often ownership is recounted.
const REBALANCE: Duration = Duration::from_secs(1);
/// Commands in one batch from one shard, at most; also the prefetch.
pub const BATCH: usize = 256;
/// Batches of one shard handed to the committer and not done yet, at most: the next one is
/// read and decoded while the one before is stored or answered.
const IN_FLIGHT: usize = 2;

/// Starts the ownership loop; it runs until shutdown, then stops every shard consumer.
pub fn start(bus: Bus, database: Database, shutdown: Shutdown) {
    let tracker = shutdown.clone();
    let committer = Committer::start(bus.clone(), database.clone(), &shutdown);
    tracker.spawn(async move {
        if !database.wait_ready(&shutdown).await || !bus.wait_ready().await {
            return;
        }
        let mut delays = switchboard::bus::backoff();
        loop {
            match own_shards(&bus, &database, &committer, &shutdown).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(%error, "shard ownership lost; starting over"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delays.next().unwrap_or(switchboard::bus::MAX_RECONNECT_DELAY)) => {}
                _ = shutdown.triggered() => return,
            }
        }
    });
}

/// A shard this copy consumes.
struct Owned {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// One life of the ownership session. Returns `Ok` at shutdown, `Err` when the session broke.
async fn own_shards(
    bus: &Bus,
    database: &Database,
    committer: &Committer,
    shutdown: &Shutdown,
) -> Result<(), sqlx::Error> {
    let mut session = database.pool().acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock_shared($1, $2)")
        .bind(LOCK_CLASS)
        .bind(MEMBER)
        .execute(&mut session)
        .await?;
    let mut owned: BTreeMap<Shard, Owned> = BTreeMap::new();
    // Copies start looking at different shards, so they do not all race for shard 0.
    let offset = (uuid::Uuid::now_v7().as_u128() % u128::from(Shard::COUNT)) as usize;
    let result = loop {
        if let Err(error) = rebalance(bus, committer, &mut session, &mut owned, offset, shutdown).await {
            break Err(error);
        }
        tokio::select! {
            _ = tokio::time::sleep(REBALANCE) => {}
            _ = shutdown.triggered() => break Ok(()),
        }
    };
    // Whatever happened, stop consuming before the locks are (or were) released.
    for (_, shard) in std::mem::take(&mut owned) {
        shard.stop.cancel();
        let _ = shard.task.await;
    }
    let _ = session.close().await;
    result
}

async fn rebalance(
    bus: &Bus,
    committer: &Committer,
    session: &mut PgConnection,
    owned: &mut BTreeMap<Shard, Owned>,
    offset: usize,
    shutdown: &Shutdown,
) -> Result<(), sqlx::Error> {
    // A consumer that ended by itself (its queue could not be set up for long) is given back.
    let finished: Vec<Shard> = owned.iter().filter(|(_, o)| o.task.is_finished()).map(|(s, _)| *s).collect();
    let mut gave_back = Vec::new();
    for shard in finished {
        owned.remove(&shard);
        unlock(session, shard).await?;
        gave_back.push(shard);
    }
    let (copies,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock' \
           AND classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(LOCK_CLASS)
    .bind(MEMBER)
    .fetch_one(&mut *session)
    .await?;
    let copies = u32::try_from(copies.max(1)).unwrap_or(1);
    let share = Shard::COUNT.div_ceil(copies) as usize;
    while owned.len() > share {
        let Some((shard, surplus)) = owned.pop_last() else { break };
        surplus.stop.cancel();
        let _ = surplus.task.await;
        unlock(session, shard).await?;
        gave_back.push(shard);
    }
    let mut took = Vec::new();
    for shard in Shard::all().cycle().skip(offset).take(Shard::COUNT as usize) {
        if owned.len() >= share {
            break;
        }
        if owned.contains_key(&shard) {
            continue;
        }
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(lock_key(shard))
            .fetch_one(&mut *session)
            .await?;
        if locked {
            let stop = shutdown.token().child_token();
            let task = tokio::spawn(consume_shard(bus.clone(), committer.clone(), shard, stop.clone()));
            owned.insert(shard, Owned { stop, task });
            took.push(shard);
        }
    }
    // One line per rebalance that changed something, not one per shard.
    if !took.is_empty() || !gave_back.is_empty() {
        tracing::info!(
            took = %shard_list(&mut took),
            gave_back = %shard_list(&mut gave_back),
            owned = owned.len(),
            copies,
            "took {} shards, gave back {}",
            took.len(),
            gave_back.len()
        );
    }
    metrics::gauge!("messages_shards_owned").set(owned.len() as f64);
    Ok(())
}

/// Shard numbers in order, as `0,3,7`.
fn shard_list(shards: &mut [Shard]) -> String {
    shards.sort();
    shards.iter().map(|s| s.index().to_string()).collect::<Vec<_>>().join(",")
}

/// The advisory lock of a shard: `(LOCK_CLASS, its number)`.
fn lock_key(shard: Shard) -> i32 {
    i32::try_from(shard.index()).unwrap_or(i32::MAX)
}

async fn unlock(session: &mut PgConnection, shard: Shard) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(lock_key(shard))
        .execute(session)
        .await?;
    Ok(())
}

/// Consumes one shard until `stop`, restarting when the channel dies.
#[tracing::instrument(name = "shard", skip_all, fields(shard = shard.index()))]
async fn consume_shard(bus: Bus, committer: Committer, shard: Shard, stop: CancellationToken) {
    let mut delays = switchboard::bus::backoff();
    loop {
        match consume_once(&bus, &committer, shard, &stop).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(shard = shard.index(), %error, "shard consumer stopped; restarting"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delays.next().unwrap_or(switchboard::bus::MAX_RECONNECT_DELAY)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn consume_once(
    bus: &Bus,
    committer: &Committer,
    shard: Shard,
    stop: &CancellationToken,
) -> Result<(), BusError> {
    let queue = queues::shard(shard);
    let name: Arc<str> = queue.name.as_str().into();
    let (channel, mut consumer) = bus.open_consumer(&queue, BATCH as u16).await?;
    // Batches handed to the committer and not done yet, oldest first, each with the delivery
    // that acknowledges it (and every delivery before it).
    let mut in_flight: VecDeque<(BoxFuture<'static, Result<(), Stopped>>, Acker)> = VecDeque::new();
    let mut stopping = false;
    let result = loop {
        if stopping && in_flight.is_empty() {
            break Ok(());
        }
        tokio::select! {
            biased;
            finished = async { (&mut in_flight.front_mut().expect("not empty").0).await }, if !in_flight.is_empty() => {
                let (_, acker) = in_flight.pop_front().expect("not empty");
                if finished.is_err() {
                    // Shutdown: what is not done goes back to the queue.
                    break Ok(());
                }
                if let Err(error) = in_time("acknowledging", acker.ack(BasicAckOptions { multiple: true })).await {
                    break Err(error);
                }
            }
            // Given back or shutting down: no more deliveries are taken, and the batches in
            // hand are finished and acknowledged first.
            _ = stop.cancelled(), if !stopping => stopping = true,
            next = consumer.next(), if !stopping && in_flight.len() < IN_FLIGHT => {
                let mut deliveries = match next {
                    Some(Ok(delivery)) => vec![Arc::new(delivery)],
                    Some(Err(error)) => break Err(error.into()),
                    None => break Err(BusError::Unavailable("the broker cancelled the consumer".into())),
                };
                // Whatever the prefetch already brought joins this batch; nothing waits for more.
                while deliveries.len() < BATCH {
                    match consumer.next().now_or_never() {
                        Some(Some(Ok(delivery))) => deliveries.push(Arc::new(delivery)),
                        _ => break,
                    }
                }
                metrics::counter!("bus_consumed_total", "queue" => "messages.shard")
                    .increment(deliveries.len() as u64);
                let last = deliveries.last().map(|d| d.acker.clone()).expect("a batch is never empty");
                // Read once: what can never be handled is parked now, not at every retry.
                let read = retry_in_place(stop.cancelled(), || async {
                    handlers::prepare(bus, &name, &deliveries)
                        .await
                        .inspect_err(|error| tracing::warn!(shard = shard.index(), %error, "cannot park a command; retrying"))
                        .ok()
                })
                .await;
                let Some(commands) = read else {
                    stopping = true;
                    continue;
                };
                let span = tracing::debug_span!(target: trace::TARGET, "shard batch", shard = shard.index(), commands = commands.len());
                let span = committer::batch_span(span, &commands);
                in_flight.push_back((Box::pin(committer.commit(commands).instrument(span)), last));
            }
        }
    };
    // Closing the channel returns any prefetched, unhandled deliveries to the queue's head.
    let _ = channel.close(200, "shard released".into()).await;
    result
}
