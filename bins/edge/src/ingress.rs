//! The HTTP ingress for backends (docs/reference.md, Ingress), on the edge's port under `/api/v1/`.
//!
//! Every route but the OpenAPI document needs `Authorization: Bearer <one of INGRESS_API_KEYS>`
//! (401 otherwise; with no keys configured the ingress is disabled and everything is 401).
//! Bodies and query strings are parsed into the contract's types
//! ([`switchboard::contract::ingress`]); anything malformed is 400 with
//! `{ error: { code: "invalid", message } }`. A command is answered 202 only once the broker
//! confirmed the message it produced; a query, 200 with the worker's answer. The reads and
//! actions for backends go through [`switchboard::backend`], the Rust library's same calls.
//!
//! Each route is registered from its handler's `#[utoipa::path]`, which lists every status it
//! can answer: the OpenAPI document (`GET /api/v1/openapi.json`, `docs/openapi.json`) is built
//! from the same code as the router, and `tests/e2e/openapi.rs` runs schemathesis against it.

use std::sync::{Arc, LazyLock};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Path, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use switchboard::{
    backend,
    bus::{Durability, RequestError, Routed},
    config::Secret,
    contract::{
        AckError, ConversationId, ErrorCode, MatchId, NotificationId, Room, UserId,
        bus::{CreateConversation, CreateNotification, Deliver, MatchCreated, Unmatch, UserConversations},
        client::{MessagesPage, PresenceReply},
        ingress::{
            Accepted, ConversationCreatedReply, CreateConversationRequest, DisconnectParams, EmitRequest,
            ErrorBody, ErrorDetail, MatchAccepted, MatchRequest, MessagesParams, NotificationAccepted,
            NotificationRequest, PresenceRequest,
        },
    },
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::App;

/// The checked-in copy of the document, relative to the workspace root.
pub const OPENAPI_OUTPUT: &str = "docs/openapi.json";

/// The command that regenerates [`OPENAPI_OUTPUT`], from the workspace root.
pub const OPENAPI_REGENERATE: &str = "cargo run -p switchboard-edge --example openapi";

/// Where the edge serves the OpenAPI document of the ingress; no key is needed to read it.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The routes and the OpenAPI document, built together: each route is registered from its
/// handler's `#[utoipa::path]`, so a route and its documentation cannot part.
fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(Document::openapi())
        .routes(routes!(emit))
        .routes(routes!(create_conversation))
        .routes(routes!(conversation_messages))
        .routes(routes!(create_match))
        .routes(routes!(remove_match))
        .routes(routes!(presence_query))
        .routes(routes!(user_conversations))
        .routes(routes!(disconnect_user))
        .routes(routes!(create_notification))
}

pub fn router(app: Arc<App>) -> Router {
    let (routes, _) = routes().split_for_parts();
    routes.route(OPENAPI_PATH, get(serve_openapi)).with_state(app)
}

/// The OpenAPI 3.1 document of every `/api/v1/*` route (checked in as `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// [`openapi`] as the JSON text served and checked in.
pub fn openapi_json() -> String {
    let mut text = openapi().to_pretty_json().expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

async fn serve_openapi() -> impl IntoResponse {
    static DOCUMENT: LazyLock<String> = LazyLock::new(openapi_json);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT.as_str())
}

/// What the document says besides the routes: its title, and the key every route needs.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard ingress",
        description = "HTTP on the edge's port for backends (docs/reference.md, Ingress). Every request needs \
                       `Authorization: Bearer <one of INGRESS_API_KEYS>`. Every refusal is \
                       `{ error: { code, message } }`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&IngressKey),
    security(("ingressKey" = [])),
)]
struct Document;

struct IngressKey;

impl Modify for IngressKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("One of the edge's `INGRESS_API_KEYS`.".into());
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme("ingressKey", SecurityScheme::Http(scheme));
    }
}

/// A request's body, read whole; one past the body limit (2 MB) is 413 with the contract's
/// error body instead of axum's plain-text one.
pub struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state).await.map(Body).map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError { status, code: "too_large", message: "the body is larger than 2 MB".into() }
            } else {
                ApiError::invalid("the body could not be read")
            }
        })
    }
}

/// An ingress error: the status and the contract's error body. The one place that turns a
/// failure into an HTTP answer.
pub struct ApiError {
    status: StatusCode,
    /// The contract's error code: one of the client codes, or an HTTP-only one
    /// (`unauthorized`, `method_not_allowed`).
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: ErrorCode::Invalid.as_str(), message: message.into() }
    }

    fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid ingress key is required".into(),
        }
    }

    /// A worker's refusal or silence, as HTTP.
    fn from_request(error: RequestError) -> Self {
        match error {
            RequestError::Refused(AckError { code: ErrorCode::Invalid, message }) => Self::invalid(message),
            RequestError::Refused(AckError { code: ErrorCode::NotFound, message }) => {
                Self { status: StatusCode::NOT_FOUND, code: ErrorCode::NotFound.as_str(), message }
            }
            RequestError::Timeout => Self {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: ErrorCode::Timeout.as_str(),
                message: "no answer in time; the outcome is unknown".into(),
            },
            other => {
                tracing::warn!(error = %other, "an ingress request failed");
                Self::unavailable()
            }
        }
    }

    pub fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Unavailable.as_str(),
            message: "the message bus is unavailable, try again".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
        }
        response
    }
}

/// Checks the bearer key in constant time against every configured key.
pub fn authorize(keys: &[Secret], headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    let mut matched = false;
    for key in keys {
        matched |= constant_time_eq(key.expose().as_bytes(), presented.as_bytes());
    }
    if matched { Ok(()) } else { Err(ApiError::unauthorized()) }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a JSON body into `T`, answering the contract's 400 on any failure; a body that is not
/// a JSON object (an array, a string) is such a failure.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    switchboard::contract::object::from_slice(body).map_err(|e| ApiError::invalid(reason(&e)))
}

/// What was wrong with a body, for the caller. The position serde_json appends ("at line 1
/// column 57") helps with broken JSON, and is noise after a value that is well-formed but not
/// allowed ("conversationId must be a UUID"), so it is kept only for the former.
fn reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if error.classify() != serde_json::error::Category::Data {
        return text;
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&position).map_or(text.clone(), str::to_owned)
}

/// What `POST /api/v1/emit` makes of its body before anything is sent: the parse and the
/// one-of rule. Every check that answers 400 is here (and in the other `*_command`
/// functions), so the fuzz targets of `fuzz/` run exactly the handlers' code.
pub fn emit_command(body: &[u8]) -> Result<Deliver, ApiError> {
    let request: EmitRequest = parse(body)?;
    let room = match (request.user_id, request.room) {
        (Some(user), None) => Room::User(user),
        (None, Some(room)) => room,
        _ => return Err(ApiError::invalid("give exactly one of userId and room")),
    };
    Ok(Deliver {
        rooms: vec![room],
        event: request.event,
        data: request.data,
        except_socket: None,
        reply: None,
        traceparent: None,
        receipt: None,
    })
}

/// Emits any event to a user's or a room's sockets, on every edge.
///
/// Answered once the broker has confirmed the delivery.
#[utoipa::path(
    post,
    path = "/api/v1/emit",
    request_body = EmitRequest,
    responses(
        (status = 202, description = "The broker has confirmed the delivery.", body = Accepted),
        (status = 400, description = "The body breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn emit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let deliver = emit_command(&body.0)?;
    backend::deliver(&app.bus, deliver, Durability::Confirmed).await.map_err(|error| {
        tracing::warn!(%error, "ingress emit not confirmed");
        ApiError::unavailable()
    })?;
    metrics::counter!("edge_ingress_total", "route" => "emit").increment(1);
    Ok((StatusCode::ACCEPTED, Json(Accepted {})))
}

/// What `POST /api/v1/conversations` makes of its body: the parse and the participants rule.
pub fn conversation_command(body: &[u8]) -> Result<CreateConversation, ApiError> {
    let request: CreateConversationRequest = parse(body)?;
    let command = CreateConversation { participants: request.participants, match_id: None };
    command.check().map_err(ApiError::invalid)?;
    Ok(command)
}

/// Creates a conversation.
///
/// Answered once it is stored.
#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    request_body = CreateConversationRequest,
    responses(
        (status = 201, description = "Stored.", body = ConversationCreatedReply),
        (status = 400, description = "The body breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    ),
)]
async fn create_conversation(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let command = conversation_command(&body.0)?;
    let conversation_id = backend::create_conversation(&app.bus, &command, app.config.ack_timeout())
        .await
        .map_err(ApiError::from_request)?;
    metrics::counter!("edge_ingress_total", "route" => "conversations").increment(1);
    Ok((StatusCode::CREATED, Json(ConversationCreatedReply { conversation_id })))
}

/// A page of a conversation's messages, ascending by `seq`, like a participant's
/// `messages:sync`.
///
/// Any conversation that exists, closed ones too. `hasMore` is true exactly when messages
/// after the page exist: ask again with `afterSeq` = the last `seq` of the page.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{conversationId}/messages",
    params(("conversationId" = ConversationId, Path, description = "The conversation."), MessagesParams),
    responses(
        (status = 200, description = "The page.", body = MessagesPage),
        (status = 400, description = "A parameter breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "No such conversation; `code` is `not_found`.", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    ),
)]
async fn conversation_messages(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> Result<Json<MessagesPage>, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let conversation_id: ConversationId = conversation_id.parse().map_err(invalid_id)?;
    let Query(params) = params.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let page = backend::conversation_messages(
        &app.bus,
        conversation_id,
        params.after_seq,
        params.page_size(),
        app.config.ack_timeout(),
    )
    .await
    .map_err(ApiError::from_request)?;
    metrics::counter!("edge_ingress_total", "route" => "conversation_messages").increment(1);
    Ok(Json(page))
}

fn invalid_id(error: switchboard::contract::ids::InvalidId) -> ApiError {
    ApiError::invalid(error.0)
}

/// Publishes a confirmed command for the notifier; 503 if the broker did not confirm it.
async fn command<M: Routed>(app: &App, message: &M) -> Result<(), ApiError> {
    app.bus.publish(message, Durability::Confirmed).await.map_err(|error| {
        tracing::warn!(%error, "an ingress command was not confirmed");
        ApiError::unavailable()
    })
}

/// What `POST /api/v1/matches` makes of its body: the parse and the two-different-users rule.
pub fn match_command(body: &[u8]) -> Result<MatchCreated, ApiError> {
    let request: MatchRequest = parse(body)?;
    if request.user_ids[0] == request.user_ids[1] {
        return Err(ApiError::invalid("userIds must be two different users"));
    }
    Ok(MatchCreated {
        match_id: request.match_id,
        user_ids: request.user_ids,
        created_at: request.created_at,
    })
}

/// Two users matched: a conversation between them (made once), a notification of type `match`
/// for each, and `match:new` to both.
///
/// Idempotent by `matchId`: every repeat gets the same answer. A `matchId` is single-use: a
/// removed match is never revived, and the same `matchId` with other users is 400.
//
// The match's conversation is made first, by the owner of conversations, which makes one per
// `matchId` (the notifier asks the same when it handles the match, and gets the same id), so
// the caller learns it without a socket; then the match is published for the notifier as
// before. A worker that does not answer is 503 or 504 and nothing is published; trying again
// is safe.
#[utoipa::path(
    post,
    path = "/api/v1/matches",
    request_body = MatchRequest,
    responses(
        (status = 202, description = "The conversation is stored and the broker has confirmed the match.", body = MatchAccepted),
        (status = 400, description = "The body breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    ),
)]
async fn create_match(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let created = match_command(&body.0)?;
    let conversation = CreateConversation {
        participants: created.user_ids.to_vec(),
        match_id: Some(created.match_id.clone()),
    };
    let conversation_id = backend::create_conversation(&app.bus, &conversation, app.config.ack_timeout())
        .await
        .map_err(ApiError::from_request)?;
    command(&app, &created).await?;
    metrics::counter!("edge_ingress_total", "route" => "matches").increment(1);
    Ok((StatusCode::ACCEPTED, Json(MatchAccepted { match_id: created.match_id, conversation_id })))
}

/// The unmatch: the match's conversation is closed for good, both users get `match:removed`.
///
/// Answered once the broker has confirmed it, also for an unknown match.
#[utoipa::path(
    delete,
    path = "/api/v1/matches/{matchId}",
    params(("matchId" = MatchId, Path, description = "The match to remove.")),
    responses(
        (status = 202, description = "The broker has confirmed the unmatch.", body = Accepted),
        (status = 400, description = "`matchId` is not a valid id; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn remove_match(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let match_id: MatchId = match_id.parse().map_err(invalid_id)?;
    command(&app, &Unmatch { match_id }).await?;
    metrics::counter!("edge_ingress_total", "route" => "unmatch").increment(1);
    Ok((StatusCode::ACCEPTED, Json(Accepted {})))
}

/// Whether users are online, and when each was last seen going offline: any users, up to 200.
///
/// Every user named is answered; one never seen is offline with `lastSeenAt` null.
#[utoipa::path(
    post,
    path = "/api/v1/presence/query",
    request_body = PresenceRequest,
    responses(
        (status = 200, description = "Each user named, once.", body = PresenceReply),
        (status = 400, description = "The body breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    ),
)]
async fn presence_query(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PresenceReply>, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let request: PresenceRequest = parse(&body.0)?;
    let reply = backend::presence(&app.bus, request.user_ids, app.config.ack_timeout())
        .await
        .map_err(ApiError::from_request)?;
    metrics::counter!("edge_ingress_total", "route" => "presence").increment(1);
    Ok(Json(reply))
}

/// Every conversation a user takes part in, open or closed, newest first.
///
/// A user in none (or unknown to Switchboard) has an empty list.
#[utoipa::path(
    get,
    path = "/api/v1/users/{userId}/conversations",
    params(("userId" = UserId, Path, description = "The user.")),
    responses(
        (status = 200, description = "The user's conversations.", body = UserConversations),
        (status = 400, description = "`userId` is not a valid id; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    ),
)]
async fn user_conversations(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Json<UserConversations>, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let user_id: UserId = user_id.parse().map_err(invalid_id)?;
    let conversations = backend::user_conversations(&app.bus, &user_id, app.config.ack_timeout())
        .await
        .map_err(ApiError::from_request)?;
    metrics::counter!("edge_ingress_total", "route" => "user_conversations").increment(1);
    Ok(Json(conversations))
}

/// Ends every socket of the user on every edge: a logout everywhere, a ban.
///
/// Answered once the broker has confirmed the request; each edge then disconnects the user's
/// sockets within moments. The clients see a server-side disconnect and do not reconnect by
/// themselves. A new connection is not prevented: delete the user's sessions first, and set
/// `revokeSessions` so that the edges do not serve them from their cache.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{userId}/sockets",
    params(("userId" = UserId, Path, description = "The user."), DisconnectParams),
    responses(
        (status = 202, description = "The broker has confirmed the request.", body = Accepted),
        (status = 400, description = "A parameter breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn disconnect_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    params: Result<Query<DisconnectParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let user_id: UserId = user_id.parse().map_err(invalid_id)?;
    let Query(params) = params.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    backend::disconnect_user(&app.bus, &user_id, params.revoke_sessions).await.map_err(|error| {
        tracing::warn!(%error, "user.disconnect was not confirmed");
        ApiError::unavailable()
    })?;
    metrics::counter!("edge_ingress_total", "route" => "disconnect").increment(1);
    Ok((StatusCode::ACCEPTED, Json(Accepted {})))
}

/// What `POST /api/v1/notifications` makes of its body, under the id `id`: the parse, which
/// applies the text rules.
pub fn notification_command(body: &[u8], id: NotificationId) -> Result<CreateNotification, ApiError> {
    let request: NotificationRequest = parse(body)?;
    Ok(CreateNotification {
        id,
        user_id: request.user_id,
        kind: request.kind,
        title: request.title,
        message: request.message,
        data: request.data,
    })
}

/// A notification for a user's inbox, delivered as `notification:new`.
///
/// Kept until the user connects if they are offline. Answered once the broker has confirmed
/// it, with the id it is stored under.
#[utoipa::path(
    post,
    path = "/api/v1/notifications",
    request_body = NotificationRequest,
    responses(
        (status = 202, description = "The broker has confirmed the notification.", body = NotificationAccepted),
        (status = 400, description = "The body breaks a rule; `code` is `invalid`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn create_notification(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let id = NotificationId::new();
    let create = notification_command(&body.0, id)?;
    command(&app, &create).await?;
    metrics::counter!("edge_ingress_total", "route" => "notifications").increment(1);
    Ok((StatusCode::ACCEPTED, Json(NotificationAccepted { id })))
}

// The descriptions of the refusals every route may give.
const UNAUTHORIZED: &str = "No valid ingress key; `code` is `unauthorized`.";
const TOO_LARGE: &str = "The body is larger than 2 MB; `code` is `too_large`.";
const UNAVAILABLE: &str = "The broker did not confirm, or no worker serves the request; `code` is `unavailable`. \
                           Retry later.";
const TIMEOUT: &str = "No answer within `ACK_TIMEOUT_MS`: the outcome is unknown; `code` is `timeout`.";
