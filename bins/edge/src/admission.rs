//! Admission control for chat commands: refuse early rather than collapse.
//!
//! Each `message:send` and `message:read` goes to its conversation's shard queue and holds a
//! place here from just before it is published until its answer arrives (or its ack timeout
//! passes). An edge holds at most `CHAT_INFLIGHT_PER_SHARD` such places per shard. When the
//! shard's places are taken, the workers are already behind: a command queued after them
//! would wait longer and longer until it expired unanswered, and the system would spend
//! itself on work that is already late. So the command is answered `unavailable` at once
//! (retrying later with the same `clientMessageId` is safe), and nothing is published.
//!
//! Per shard, not per edge: one hot conversation fills its own shard's places and leaves the
//! other shards' commands alone.

use std::sync::Arc;

use switchboard::{
    bus::Shard,
    contract::{AckError, ConversationId, ErrorCode},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    shards: Vec<Arc<Semaphore>>,
}

impl Admission {
    pub fn new(per_shard: u32) -> Self {
        let places = usize::try_from(per_shard).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self { shards: Shard::all().map(|_| Arc::new(Semaphore::new(places))).collect() }
    }

    /// A place for a command to `conversation`'s shard, held until it is dropped; `unavailable`
    /// when the shard has none free.
    pub fn admit(&self, conversation: ConversationId) -> Result<OwnedSemaphorePermit, AckError> {
        let shard = &self.shards[Shard::of(conversation).index()];
        shard.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("edge_chat_refused_total", "reason" => "overloaded").increment(1);
            AckError::new(ErrorCode::Unavailable, "too busy, try again shortly")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_shard_refuses_and_frees_its_places() {
        let admission = Admission::new(2);
        let conversation = ConversationId::new();
        let first = admission.admit(conversation).expect("a place");
        let _second = admission.admit(conversation).expect("a place");
        let refused = admission.admit(conversation).expect_err("full");
        assert_eq!(refused.code, ErrorCode::Unavailable);
        // Another shard is not affected.
        let other = std::iter::repeat_with(ConversationId::new)
            .find(|c| Shard::of(*c) != Shard::of(conversation))
            .expect("another shard");
        assert!(admission.admit(other).is_ok());
        drop(first);
        assert!(admission.admit(conversation).is_ok());
    }
}
