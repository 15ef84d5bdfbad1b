//! `rpc.requests`: several shard commands from one edge in one message (what its
//! [`RequestBatcher`](switchboard::bus::RequestBatcher) gathered for the shard while its last
//! message was on its way). Each item is a command of its own: its own id (the idempotency key),
//! correlation id and trace, answered on its own (one reply message per edge for the whole
//! batch). Unpacked here into the batch's commands, in order; an item that cannot be read (or
//! is not a send or a read) is parked by itself, not with the rest of its batch, and answered
//! `invalid` when its kind is one this queue answers.

use std::sync::Arc;

use lapin::message::Delivery;
use switchboard::{
    Bus,
    bus::{BusError, BusMessage, Inbound, Outgoing, Poison, queues::ShardCommand},
    contract::{
        AckError,
        bus::{BatchedRequest, MarkRead, RequestBatch, SendMessage},
    },
};

use super::dispatch;
use crate::batch::{Command, park_item};

/// The items of `batch`, which `delivery` carried, as commands for `commands`.
pub async fn unpack(
    bus: &Bus,
    queue: &Arc<str>,
    delivery: &Arc<Delivery>,
    batch: RequestBatch,
    commands: &mut Vec<Command>,
) -> Result<(), BusError> {
    for item in batch.requests {
        unpack_item(bus, queue, delivery, item, commands).await?;
    }
    Ok(())
}

/// One item of a request batch: a command for `commands`, or parked (and answered `invalid`
/// when its kind is one this queue answers).
async fn unpack_item(
    bus: &Bus,
    queue: &Arc<str>,
    delivery: &Arc<Delivery>,
    item: BatchedRequest,
    commands: &mut Vec<Command>,
) -> Result<(), BusError> {
    let action = match ShardCommand::decode_body(&item.kind, item.data.get().as_bytes()) {
        Some(Ok(command)) => match dispatch(command) {
            Ok(action) => Ok(action),
            Err(_) => {
                return park_item(bus, queue, delivery, &item, &Poison::refused("a batch inside a batch"))
                    .await;
            }
        },
        Some(Err(error)) => Err(error),
        None => return park_item(bus, queue, delivery, &item, &Poison::unknown_kind(Some(&item.kind))).await,
    };
    match action {
        Ok(action) => commands.push(Command {
            id: item.id,
            action,
            delivery: delivery.clone(),
            item_correlation: Some(item.correlation_id),
            queue: queue.clone(),
            traceparent: item.traceparent,
        }),
        Err(error) => {
            park_item(bus, queue, delivery, &item, &Poison::malformed(error)).await?;
            let refusal = AckError::invalid("the command could not be read");
            let (request, correlation) = (&delivery.properties, item.correlation_id.as_str());
            bus.reply_many(vec![match item.kind.as_str() {
                SendMessage::KIND => Outgoing::item::<SendMessage>(request, correlation, Err(refusal)),
                _ => Outgoing::item::<MarkRead>(request, correlation, Err(refusal)),
            }])
            .await;
        }
    }
    Ok(())
}
