//! `switchboard-messages` owns conversations and messages: membership, persistence, history,
//! read receipts, and the fan-out of `message:new` (docs/reference.md, Processes, Client events and Server events).
//!
//! # The design, and the guarantees it gives
//!
//! **The command stream is partitioned by conversation.** `message:send` and `message:read`
//! travel as request commands on `events.topic` with the routing key `messages.shard.<n>`,
//! where `n` is the conversation id's low bits modulo [`Shard::COUNT`] (16). Each shard is a
//! durable queue of the same name. One conversation's commands are therefore in one queue, in
//! the order the edges published them; an edge publishes one socket's commands strictly in the
//! order the socket sent them (see the edge's `events::messages`).
//!
//! **Exactly one copy works a shard at a time** ([`shards`]). Copies share the 16 shards
//! through PostgreSQL advisory locks: every copy holds a shared "member" lock, so the number
//! of live copies is the number of holders; each copy aims for `ceil(16 / copies)` shards,
//! takes free ones with `pg_try_advisory_lock`, and gives back its surplus. A copy consumes a
//! shard only while it holds that shard's lock. The queues are also declared with RabbitMQ's
//! single-active-consumer, so even if two copies ever subscribed at once (a lock connection
//! lost and re-taken elsewhere), the broker would still feed only one.
//!
//! **Order while copies come and go.** A copy that gives a shard back first stops consuming,
//! finishes and acknowledges the batch in hand, and closes its channel (the broker puts the
//! deliveries it had prefetched back at the head of the queue, in order); only then does it
//! release the lock, and only after taking the lock does the next copy subscribe. A copy that
//! dies (SIGKILL) loses its database session, so its locks go at once, and its connection, so
//! its unacknowledged deliveries return to the head of their queues; a survivor takes the
//! shards at its next rebalance (every second). Either way one conversation's commands are
//! handled by one copy at a time, in queue order.
//!
//! **Batches, and one committer** ([`batch`], [`committer`]; each kind's part in [`handlers`]).
//! Edges send a shard's commands alone or several in one `rpc.requests` message. A shard
//! consumer reads what its prefetch already holds (up to 256 messages), decodes it once, and
//! hands it to the copy's one committer; it reads and decodes its next batch while that one is
//! being stored. The committer stores everything its shards handed in since its last
//! transaction began in one transaction (group commit), whichever shards it came from: at low
//! rates a command is stored alone and at once; at high rates the number of transactions
//! follows the database's pace, not the number of shards. Shards' batches are stored and
//! answered in the order they were handed in, so each shard's (and each conversation's) order
//! holds.
//!
//! **Durable ack, idempotency, gapless seq.** In the transaction each conversation's row is
//! locked, then for each new message its `last_seq` is advanced and the message inserted, so
//! seqs are contiguous, never repeat, and follow the queue's order whichever copy commits.
//! Only after `COMMIT` does the copy publish the fan-out, answer each sender (the edge then
//! acks the client) and acknowledge the deliveries. A crash before the commit leaves nothing
//! (the client sees `timeout` and may retry); a crash after it makes the broker redeliver the
//! commands, and the unique `command_id` (the command's envelope or item id) and
//! `(conversation_id, sender_id, client_message_id)` find the stored messages, which are
//! answered and fanned out again instead of stored twice. A client retry with the same
//! `clientMessageId` in the same conversation gets the original message.
//!
//! **Poison.** One bad command never stalls its shard. A command that cannot be read is
//! parked in the dead-letter queue (and answered `invalid`) before the batch's transaction.
//! Only an unreachable or busy database makes the batch wait and try again; when the database
//! refuses the batch for any other reason, its commands are stored one by one, and the one it
//! refuses is answered `invalid` and parked ([`batch::store`]).
//!
//! **Expiry.** A command carries `expiresAt` (the edge's ack timeout) and the AMQP expiration;
//! one that is past it when its batch runs is dropped unanswered, so a send that timed out is
//! never stored later. `timeout` means "unknown": retrying with the same `clientMessageId`
//! stays safe.
//!
//! **Fan-out and replies, batched.** After commit, the batch's new messages (and read
//! receipts) are published to `user.direct` as `edge.deliver.batch` messages addressed to the
//! union of their participants' user rooms (the `CC` header; at most 500 users each), so each
//! edge receives the whole batch once and hands each item to its own sockets of that item's
//! rooms, except the sending socket; publisher confirms; delivery to sockets is at least once,
//! and clients drop a repeated message `id`. The answers go as one `rpc.replies` message per
//! requesting edge. The committer publishes one transaction's fan-out and answers while the
//! next transaction runs; publishing in transaction order keeps each conversation's
//! `message:new` in `seq` order. Nothing waits for more work to gather: what a batch holds is
//! what arrived while the one before it was on its way.
//!
//! **The database.** A batch is one call of the `switchboard_chat_batch` function (see its
//! migration): one round trip, one transaction, every inner statement a key lookup.
//!
//! **Queries** ([`handlers`], a module per request kind): membership, `messages:sync` and
//! conversation creation are read-mostly requests served by every copy from competing
//! consumers. A created conversation is announced on `events.topic` as `conversation.opened`
//! (its participants), from which presence introduces the online participants to each other.
//!
//! [`Shard::COUNT`]: switchboard::bus::Shard::COUNT

#![forbid(unsafe_code)]

pub mod batch;
pub mod committer;
pub mod handlers;
pub mod shards;
pub mod telemetry;

use switchboard::{Config, Role, Shutdown, service::Process};

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    telemetry::describe();
    let process = Process::start(Role::Messages, config, shutdown, true).await?;
    let database = process.database.clone().expect("the messages worker has a database");
    let serving = handlers::serve(&process.bus, &database);
    shards::start(process.bus.clone(), database, process.shutdown.clone());
    let readiness = process.readiness().check("requests", move || {
        let ready = serving.all_started();
        async move { if ready { Ok(()) } else { Err("the request queues are not consumed yet".to_owned()) } }
    });
    process.serve_with(axum::Router::new(), readiness).await
}
