//! What every handler of the edge shares, built once at start (see [`crate::run`]).

use std::sync::Arc;

use switchboard::{Bus, Config, bus::RequestBatcher, config::Secret};

use crate::{admission::Admission, auth::Authenticator, bindings::Bindings, inbox::Flusher, limits::Limits};

/// What every handler of the edge shares.
pub struct App {
    pub config: Config,
    pub bus: Bus,
    /// Shared with [`crate::inbound`], which forgets a user's cached sessions on
    /// `user.disconnect`.
    pub auth: Arc<Authenticator>,
    pub bindings: Arc<Bindings>,
    /// Asks for users' waiting notifications (shared with [`crate::inbound`]).
    pub inbox: Flusher,
    pub ingress_keys: Vec<Secret>,
    pub admission: Admission,
    /// Handshakes per client address and events per user (see [`crate::limits`]).
    pub limits: Arc<Limits>,
    /// One batcher per chat shard (index = shard): every chat command of this edge to that
    /// shard goes through it, in the order the sockets' turns let them in.
    pub shards: Vec<RequestBatcher>,
}
