//! `edge.deliver.batch`: a messages worker's fan-out of one transaction, addressed to every user
//! it concerns. Its items are emitted in order, each as an [`edge.deliver`](super::deliver) to
//! the local sockets of its own rooms, so items for users this edge has no socket of cost
//! nothing.

use socketioxide::SocketIo;
use switchboard::{Bus, contract::bus::DeliverBatch};

use super::deliver;

pub async fn handle(io: &SocketIo, bus: &Bus, batch: DeliverBatch, sent_at: chrono::DateTime<chrono::Utc>) {
    for item in batch.items {
        deliver::handle(io, bus, item, sent_at).await;
    }
}
