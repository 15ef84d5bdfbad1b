//! The one wrapper every client event goes through (see [`crate::events`]): rate limits,
//! payload validation, the ack timeout, and the acknowledgement in the contract's shape.

use std::{collections::HashMap, future::Future, sync::Arc, time::Instant};

use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use switchboard::{
    bus::{Request, RequestError, Routed},
    contract::{AckError, ack::ack_body, object},
    trace,
};
use tracing::Instrument;

use crate::{
    app::App,
    client::{Client, Turn},
};

/// What a handler gets besides its payload.
pub struct Context {
    pub socket: SocketRef,
    pub client: Arc<Client>,
    pub app: Arc<App>,
    /// This event's place in the socket's order, for handlers registered with
    /// [`Events::on_ordered`]
    /// (they wait for it, and dropping it passes the turn on); `None` for the others, whose
    /// turn was passed on before they started.
    pub turn: Option<Turn>,
}

impl Context {
    /// Asks a worker over the bus (request/reply, to the request's route) within the ack
    /// timeout, and reads a failure the contract's way.
    pub async fn ask<R: Request + Routed>(&self, request: &R) -> Result<R::Response, AckError> {
        self.app.bus.request(request, self.app.config.ack_timeout()).await.map_err(request_error)
    }
}

/// The contract's reading of a failed request to a worker.
pub fn request_error(error: RequestError) -> AckError {
    match error {
        RequestError::Timeout => AckError::timeout(),
        RequestError::Refused(error) => error,
        RequestError::Bus(_) | RequestError::Malformed(_) => AckError::unavailable(),
    }
}

/// Every client event's handler, registered once for all sockets (a table per socket cost
/// about a kilobyte of each idle connection). Each socket has one zero-sized fallback handler
/// that looks the event up here ([`crate::events::register`]).
#[derive(Default)]
pub struct Events {
    handlers: HashMap<&'static str, Handler>,
}

/// One event's wrapped handler: what Socket.IO extracted, to the ack.
type Handler = Box<dyn Fn(Call) -> BoxFuture<'static, ()> + Send + Sync>;

/// An incoming event, as Socket.IO extracted it.
pub struct Call {
    pub socket: SocketRef,
    /// Taken in arrival order, when the packet was read.
    pub turn: Turn,
    /// The first argument, or why it could not be read.
    pub data: Result<Value, String>,
    pub ack: AckSender,
    pub app: Arc<App>,
}

impl Events {
    /// Registers `handler` for `event` behind the rate limit, payload validation and timeout.
    pub fn on<P, R, F, Fut>(&mut self, event: &'static str, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, AckError>> + Send + 'static,
    {
        self.register(event, false, handler);
    }

    /// [`Events::on`] for events whose effects must keep the order the socket sent them in:
    /// the handler gets the event's [`Turn`].
    pub fn on_ordered<P, R, F, Fut>(&mut self, event: &'static str, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, AckError>> + Send + 'static,
    {
        self.register(event, true, handler);
    }

    fn register<P, R, F, Fut>(&mut self, event: &'static str, ordered: bool, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, AckError>> + Send + 'static,
    {
        let wrapped = move |call: Call| -> BoxFuture<'static, ()> {
            let handler = handler.clone();
            // The first span of a message's trace (a disabled callsite unless traces are
            // exported; see `switchboard::trace`).
            let span = tracing::debug_span!(target: trace::TARGET, "client event", otel.name = event, otel.kind = "server");
            let Call { socket, turn, data, ack, app } = call;
            let handled = async move {
                let started = Instant::now();
                metrics::counter!("edge_events_in_total", "event" => event).increment(1);
                let Some(client) = socket.extensions.get::<Arc<Client>>() else { return };
                let result = if !client.allow_event() || !app.limits.allow_user_event(&client.user) {
                    Err(AckError::rate_limited())
                } else {
                    match data.and_then(|v| object::from_value::<P>(v).map_err(|e| e.to_string())) {
                        Err(reason) => Err(AckError::invalid(reason)),
                        Ok(payload) => {
                            let timeout = app.config.ack_timeout();
                            let turn = ordered.then_some(turn);
                            let context = Context { socket: socket.clone(), client, app, turn };
                            match tokio::time::timeout(timeout, handler(context, payload)).await {
                                Ok(result) => result,
                                Err(_) => Err(AckError::timeout()),
                            }
                        }
                    }
                };
                reply(event, ack, &result);
                metrics::histogram!("edge_event_duration_seconds", "event" => event)
                    .record(started.elapsed().as_secs_f64());
            };
            Box::pin(handled.instrument(span))
        };
        self.handlers.insert(event, Box::new(wrapped));
    }

    /// Handles one incoming event named `name`.
    pub async fn handle(&self, name: &str, call: Call) {
        match self.handlers.get(name) {
            Some(handler) => handler(call).await,
            None => unknown_event(name, call),
        }
    }
}

fn reply<R: Serialize>(event: &'static str, ack: AckSender, result: &Result<R, AckError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(error) => error.code.as_str(),
    };
    metrics::counter!("edge_acks_total", "event" => event, "result" => outcome).increment(1);
    if let Err(error) = ack.send(&ack_body(result)) {
        tracing::debug!(%error, event, "could not send an ack");
    }
}

/// Any event no family handles: `invalid` if the client asked for an ack, ignored otherwise.
fn unknown_event(name: &str, call: Call) {
    metrics::counter!("edge_events_in_total", "event" => "unknown").increment(1);
    let Call { socket, ack, app, .. } = call;
    let limited = socket
        .extensions
        .get::<Arc<Client>>()
        .is_some_and(|c| !c.allow_event() || !app.limits.allow_user_event(&c.user));
    let error = if limited {
        AckError::rate_limited()
    } else {
        AckError::invalid(format!("unknown event {:?}", truncate(name, 64)))
    };
    reply::<()>("unknown", ack, &Err(error));
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
