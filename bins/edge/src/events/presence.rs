//! `presence:query`: answered by the presence worker, for the caller's contacts only.

use switchboard::contract::{
    AckError,
    bus::PresenceLookup,
    client::{PresenceQuery, PresenceReply, event},
};

use super::handler::{Context, Events};

pub fn register(events: &mut Events) {
    events.on(event::PRESENCE_QUERY, query);
}

async fn query(cx: Context, request: PresenceQuery) -> Result<PresenceReply, AckError> {
    let lookup = PresenceLookup { user_id: Some(cx.client.user.clone()), user_ids: request.user_ids };
    cx.ask(&lookup).await
}
