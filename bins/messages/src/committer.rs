//! The one committer of a copy: group commit across every shard the copy owns.
//!
//! Each shard consumer reads a batch from its queue and hands it to the committer
//! ([`Committer::commit`]). The committer stores everything handed to it since its last
//! transaction began in one call of the batch function (one transaction), whichever shards
//! it came from, so the number of transactions follows the database's pace, not the number
//! of shards: an idle copy commits a lone command at once, a busy one commits what sixteen
//! shards gathered while the last transaction ran.
//!
//! Two stages, each one task, each in the order batches were handed in:
//! 1. **store**: one transaction for the group (retried in place while the database is away);
//! 2. **publish**: the group's fan-out and answers, then each shard is told its batch is done
//!    (and acknowledges its deliveries).
//!
//! The store stage runs the next group's transaction while the publish stage is still
//! waiting for the broker's confirms of the one before; it runs at most one group ahead.
//! Publishing in group order keeps each conversation's `message:new` in `seq` order: a
//! conversation's commands are all in one shard, and a shard's batches enter the committer
//! in its queue's order.

use switchboard::{
    Bus, Shutdown,
    bus::{DomainEvents, retry_in_place},
    db::Database,
    trace,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::batch::{self, Command, Decided};

/// Most shard batches in one transaction: one per shard.
const GROUP: usize = switchboard::bus::Shard::COUNT as usize;

/// Where shard consumers hand in their batches; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Submission>,
}

/// One shard's batch, and who to tell when it is done.
struct Submission {
    commands: Vec<Command>,
    done: oneshot::Sender<()>,
}

/// A stored group on its way to the publish stage.
struct Stored {
    commands: Vec<Command>,
    decided: Decided,
    done: Vec<oneshot::Sender<()>>,
}

/// The committer is stopping (shutdown): the batch was not stored, or not answered. Its
/// deliveries stay unacknowledged and return to the queue.
#[derive(Debug)]
pub struct Stopped;

impl Committer {
    /// Starts both stages; they run until shutdown, finishing the group in hand.
    pub fn start(bus: Bus, database: Database, shutdown: &Shutdown) -> Self {
        let (queue, submissions) = mpsc::unbounded_channel();
        // Capacity one: the store stage runs at most one group ahead of the publish stage.
        let (stored_sender, stored) = mpsc::channel(1);
        shutdown.spawn(store_stage(bus.clone(), database, shutdown.clone(), submissions, stored_sender));
        shutdown.spawn(publish_stage(DomainEvents::new(bus.clone()), bus, stored));
        Self { queue }
    }

    /// Hands in a shard's batch; resolves once it was stored, fanned out and answered. The
    /// caller may hand in its next batch before this resolves: batches are done in the order
    /// they were handed in.
    pub fn commit(&self, commands: Vec<Command>) -> impl Future<Output = Result<(), Stopped>> + use<> {
        let (done, finished) = oneshot::channel();
        let sent = self.queue.send(Submission { commands, done });
        async move {
            sent.map_err(|_| Stopped)?;
            finished.await.map_err(|_| Stopped)
        }
    }
}

async fn store_stage(
    bus: Bus,
    database: Database,
    shutdown: Shutdown,
    mut submissions: mpsc::UnboundedReceiver<Submission>,
    stored: mpsc::Sender<Stored>,
) {
    let mut group = Vec::with_capacity(GROUP);
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.triggered() => return,
            received = submissions.recv_many(&mut group, GROUP) => received,
        };
        if received == 0 {
            return;
        }
        // A shard that stopped waiting (its consumer died) has its deliveries back in the
        // queue: they will come again.
        group.retain(|submission| !submission.done.is_closed());
        let mut commands = Vec::new();
        let mut done = Vec::with_capacity(group.len());
        for submission in group.drain(..) {
            commands.extend(submission.commands);
            done.push(submission.done);
        }
        // The database or the broker unreachable: the same group is tried again in place (what
        // was committed before is found by its command ids). Commands that expire meanwhile
        // are dropped by the retry itself.
        let span = batch_span(
            tracing::debug_span!(target: trace::TARGET, "commit", commands = commands.len()),
            &commands,
        );
        let decided = retry_in_place(shutdown.triggered(), || async {
            batch::store(&bus, &database, &commands)
                .await
                .inspect_err(
                    |error| tracing::warn!(%error, commands = commands.len(), "batch failed; retrying"),
                )
                .ok()
        })
        .instrument(span)
        .await;
        let Some(decided) = decided else { return };
        metrics::histogram!("messages_batch_shards").record(done.len() as f64);
        if stored.send(Stored { commands, decided, done }).await.is_err() {
            return;
        }
    }
}

async fn publish_stage(domain: DomainEvents, bus: Bus, mut stored: mpsc::Receiver<Stored>) {
    while let Some(Stored { commands, decided, done }) = stored.recv().await {
        let span = batch_span(
            tracing::debug_span!(target: trace::TARGET, "fan-out", commands = commands.len()),
            &commands,
        );
        batch::publish(&bus, &domain, &commands, decided).instrument(span).await;
        for shard in done {
            let _ = shard.send(());
        }
    }
}

/// `span`, continuing the trace of the first of `commands` that has one and linked to the
/// others' (see `switchboard::trace`).
pub fn batch_span(span: tracing::Span, commands: &[Command]) -> tracing::Span {
    trace::continue_from(&span, commands.iter().map(Command::traceparent));
    span
}
