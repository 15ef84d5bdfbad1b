//! `conversation.opened`: the owner of conversations created one (published on `events.topic`,
//! bound to this queue, so it is handled in order with the changes). Each participant who is
//! online is announced to the others with `user:online`, addressed to them only: two online
//! users who get a conversation (a match) learn each other's presence at once instead of at
//! their next reconnect. The owner announces only a creation that stored something, so a replay
//! introduces no one twice; see [`Presence::introduce`](crate::state::Presence::introduce).

use switchboard::contract::bus::ConversationOpened;

use crate::Worker;

pub(crate) fn handle(worker: &Worker, opened: ConversationOpened) {
    worker.decide(|state| state.introduce(&opened.participants));
}
