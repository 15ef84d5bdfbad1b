//! What the messages worker consumes, and where each kind is handled: one module per kind,
//! named after it.
//!
//! **The shard queues** (`messages.shard.<n>`, see [`crate::shards`]) decode into
//! [`ShardCommand`]: its kinds are looked at in one place, `dispatch`, on the way from a
//! shard's deliveries to the commands of a batch ([`prepare`]). A batch is stored as a whole
//! (one call of the batch function, [`crate::batch`]); what is particular to each kind is in
//! [`send_message`] and [`mark_read`], and [`request_batch`] unpacks the batches of them the
//! edges send.
//!
//! **The request queues** carry one kind each and are served by every copy from competing
//! consumers ([`serve`]): membership for the edges' `conversation:join`, contacts,
//! `messages:sync` pages, a user's conversations, and conversation creation and closing.
//!
//! | queue | kind | handler |
//! | --- | --- | --- |
//! | `messages.shard.<n>` | `message.send` | [`send_message`] |
//! | `messages.shard.<n>` | `message.read` | [`mark_read`] |
//! | `messages.shard.<n>` | `rpc.requests` | [`request_batch`] |
//! | `messages.membership` | `conversation.membership.query` | [`membership_query`] |
//! | `messages.contacts` | `conversation.contacts.query` | [`contacts_query`] |
//! | `messages.close` | `conversation.close` | [`close_conversation`] |
//! | `messages.sync` | `messages.sync.query` | [`sync_query`] |
//! | `messages.conversations` | `conversations.query` | [`user_conversations_query`] |
//! | `messages.create` | `conversation.create` | [`create_conversation`] |

pub mod close_conversation;
pub mod contacts_query;
pub mod create_conversation;
pub mod mark_read;
pub mod membership_query;
pub mod request_batch;
pub mod send_message;
pub mod sync_query;
pub mod user_conversations_query;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use lapin::message::Delivery;
use switchboard::{
    Bus,
    bus::{BusError, BusMessage, ConsumeOptions, Envelope, queues, queues::ShardCommand},
    contract::{
        AckError,
        bus::{MarkRead, RequestBatch, SendMessage},
    },
    db::Database,
    trace,
};

use crate::batch::{Action, Command};

/// Reads the deliveries of the shard queue `queue`, once: the commands to store, in order. A
/// delivery is one command, or a [`RequestBatch`] of them. What cannot be read (or is of a
/// kind this queue does not carry) is parked in the dead-letter queue and, when it can be
/// answered, answered `invalid`, so it is out of the way before any transaction. `Err` only
/// when the broker could not take a parked copy: the caller retries.
pub async fn prepare(
    bus: &Bus,
    queue: &Arc<str>,
    deliveries: &[Arc<Delivery>],
) -> Result<Vec<Command>, BusError> {
    let mut commands = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let command = |id, action| Command {
            id,
            action,
            delivery: delivery.clone(),
            item_correlation: None,
            queue: queue.clone(),
            traceparent: trace::from_header(&delivery.properties),
        };
        match Envelope::<ShardCommand>::decode_inbound(&delivery.data) {
            Ok(Envelope { id, data, .. }) => match dispatch(data) {
                Ok(action) => commands.push(command(id, action)),
                Err(batch) => request_batch::unpack(bus, queue, delivery, batch, &mut commands).await?,
            },
            Err(error) => {
                bus.dead_letter(queue, delivery, &error.into()).await?;
                // A command of a kind this queue answers can be told; a batch that cannot be
                // read cannot (its requesters time out), nor can a kind of another queue.
                let refusal = AckError::invalid("the command could not be read");
                match switchboard::bus::kind_of(delivery).as_deref() {
                    Some(SendMessage::KIND) => {
                        bus.reply::<SendMessage>(&delivery.properties, Err(refusal)).await
                    }
                    Some(MarkRead::KIND) => bus.reply::<MarkRead>(&delivery.properties, Err(refusal)).await,
                    _ => {}
                }
            }
        }
    }
    Ok(commands)
}

/// The one place a shard command's kind is looked at: a send ([`send_message`]) or a read
/// ([`mark_read`]) is a command of the batch; a batch of them is unpacked ([`request_batch`]).
fn dispatch(command: ShardCommand) -> Result<Action, RequestBatch> {
    match command {
        ShardCommand::SendMessage(send) => Ok(Action::Send(send)),
        ShardCommand::MarkRead(read) => Ok(Action::Read(read)),
        ShardCommand::RequestBatch(batch) => Err(batch),
    }
}

/// Serves every request queue, each kind from its module.
pub fn serve(bus: &Bus, database: &Database) -> Serving {
    let mut serving = Serving::default();
    let db = database.clone();
    bus.serve(queues::membership(), serving.options(16), move |query| {
        let db = db.clone();
        async move { membership_query::handle(&db, query).await }
    });
    let db = database.clone();
    bus.serve(queues::contacts(), serving.options(16), move |query| {
        let db = db.clone();
        async move { contacts_query::handle(&db, query).await }
    });
    let (db, publisher) = (database.clone(), bus.clone());
    bus.serve(queues::close_conversation(), serving.options(4), move |request| {
        let (db, bus) = (db.clone(), publisher.clone());
        async move { close_conversation::handle(&db, &bus, request).await }
    });
    let db = database.clone();
    bus.serve(queues::sync(), serving.options(16), move |query| {
        let db = db.clone();
        async move { sync_query::handle(&db, query).await }
    });
    let db = database.clone();
    bus.serve(queues::user_conversations(), serving.options(8), move |query| {
        let db = db.clone();
        async move { user_conversations_query::handle(&db, query).await }
    });
    let (db, publisher) = (database.clone(), bus.clone());
    bus.serve(queues::create_conversation(), serving.options(8), move |request| {
        let (db, bus) = (db.clone(), publisher.clone());
        async move { create_conversation::handle(&db, &bus, request).await }
    });
    serving
}

/// Whether every request queue has had a consumer. Until then a request may come back
/// unroutable and be answered `unavailable`, so the worker does not call itself ready.
#[derive(Clone, Default)]
pub struct Serving {
    /// Consumers that have started at least once.
    started: Arc<AtomicUsize>,
    /// Consumers set up by [`serve`].
    consumers: usize,
}

impl Serving {
    fn options(&mut self, concurrency: usize) -> ConsumeOptions {
        self.consumers += 1;
        let started = self.started.clone();
        // A consumer restarts after a channel loss; only its first start counts.
        let first = AtomicBool::new(true);
        ConsumeOptions {
            on_start: Some(Arc::new(move || {
                if first.swap(false, Ordering::Relaxed) {
                    started.fetch_add(1, Ordering::Relaxed);
                }
            })),
            ..ConsumeOptions::concurrent(concurrency)
        }
    }

    pub fn all_started(&self) -> bool {
        self.started.load(Ordering::Relaxed) == self.consumers
    }
}

/// A query the database could not answer: `unavailable`, and the cause logged.
fn unavailable(error: sqlx::Error) -> AckError {
    tracing::warn!(%error, "a query failed");
    AckError::unavailable()
}
