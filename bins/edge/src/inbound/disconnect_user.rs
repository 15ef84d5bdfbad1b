//! `user.disconnect`: ending a user's sockets on this edge when a backend asks (ingress
//! `DELETE /api/v1/users/{userId}/sockets`, which every edge hears): a logout everywhere, a ban.
//!
//! The cached sessions go first (when asked), then the sockets: a client that reconnects the
//! moment it is disconnected finds its session looked up again, not served from the cache.
//! The clients see a server-side disconnect (`io server disconnect`), after which
//! `socket.io-client` does not reconnect by itself; the usual clean-up follows (rooms, presence).

use std::sync::Arc;

use socketioxide::SocketIo;
use switchboard::contract::{Room, bus::DisconnectUser};

use crate::auth::Authenticator;

/// Runs beside the delivery loop: forgetting cached sessions walks the whole session cache,
/// which must not hold up everyone's deliveries.
pub fn handle(io: &SocketIo, auth: &Arc<Authenticator>, request: DisconnectUser) {
    let (io, auth) = (io.clone(), auth.clone());
    tokio::spawn(async move { disconnect(&io, &auth, &request).await });
}

#[tracing::instrument(skip_all, fields(user = %request.user_id, revoke = request.revoke_sessions))]
async fn disconnect(io: &SocketIo, auth: &Authenticator, request: &DisconnectUser) {
    if request.revoke_sessions {
        let forgotten = auth.forget_user(&request.user_id);
        tracing::info!(forgotten, "forgot the user's cached sessions");
    }
    let room = Room::User(request.user_id.clone()).to_string();
    let sockets = io.within(room).sockets();
    let count = sockets.len();
    for socket in sockets {
        if let Err(error) = socket.disconnect() {
            tracing::debug!(%error, "a socket of the user was already gone");
        }
    }
    if count > 0 {
        tracing::info!(sockets = count, "disconnected the user's sockets");
    }
}
