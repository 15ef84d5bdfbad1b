//! The HTTP ingress for backends (docs/reference.md, Ingress), on the edge's port under `/api/v1/`.
//!
//! Every route needs `Authorization: Bearer <one of INGRESS_API_KEYS>` (401 otherwise; with no
//! keys configured the ingress is disabled and everything is 401). Bodies are parsed into the
//! contract's types; anything malformed is 400 with `{ error: { code: "invalid", message } }`.
//! A request is answered 202 only once the broker confirmed the message it produced.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::Path,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard::{
    backend,
    bus::{Durability, RequestError, Routed},
    config::Secret,
    contract::{
        AckError, ErrorCode, MatchId, NotificationId, Room, UserId,
        bus::{
            CreateConversation, CreateNotification, Deliver, EventName, MatchCreated, NotificationData,
            NotificationKind, NotificationText, NotificationTitle, Unmatch,
        },
    },
};

use crate::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/emit", post(emit))
        .route("/api/v1/conversations", post(create_conversation))
        .route("/api/v1/matches", post(create_match))
        .route("/api/v1/matches/{match_id}", delete(remove_match))
        .route("/api/v1/notifications", post(create_notification))
        .with_state(app)
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
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmitRequest {
    user_id: Option<UserId>,
    room: Option<Room>,
    event: EventName,
    #[serde(default)]
    data: Value,
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

/// `POST /api/v1/emit`: `{ userId, event, data }` or `{ room, event, data }`.
async fn emit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let deliver = emit_command(&body)?;
    backend::deliver(&app.bus, deliver, Durability::Confirmed).await.map_err(|error| {
        tracing::warn!(%error, "ingress emit not confirmed");
        ApiError::unavailable()
    })?;
    metrics::counter!("edge_ingress_total", "route" => "emit").increment(1);
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConversationRequest {
    participants: Vec<UserId>,
}

/// What `POST /api/v1/conversations` makes of its body: the parse and the participants rule.
pub fn conversation_command(body: &[u8]) -> Result<CreateConversation, ApiError> {
    let request: CreateConversationRequest = parse(body)?;
    let command = CreateConversation { participants: request.participants, match_id: None };
    command.check().map_err(ApiError::invalid)?;
    Ok(command)
}

/// `POST /api/v1/conversations`: `{ participants: [userId, ...] }` (2 to 100, distinct);
/// 201 `{ conversationId }` once stored.
async fn create_conversation(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let command = conversation_command(&body)?;
    let conversation_id = backend::create_conversation(&app.bus, &command, app.config.ack_timeout())
        .await
        .map_err(ApiError::from_request)?;
    metrics::counter!("edge_ingress_total", "route" => "conversations").increment(1);
    Ok((StatusCode::CREATED, Json(json!({ "conversationId": conversation_id }))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MatchRequest {
    match_id: MatchId,
    user_ids: [UserId; 2],
    #[serde(default)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
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

/// `POST /api/v1/matches`: `{ matchId, userIds: [a, b], createdAt? }`; 202 `{ matchId,
/// conversationId }`, idempotent by `matchId`.
///
/// The match's conversation is made first, by the owner of conversations, which makes one per
/// `matchId` (the notifier asks the same when it handles the match, and gets the same id), so
/// the caller learns it without a socket; then the match is published for the notifier as
/// before. A worker that does not answer is 503 or 504 and nothing is published; trying
/// again is safe.
async fn create_match(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let created = match_command(&body)?;
    let conversation = CreateConversation {
        participants: created.user_ids.to_vec(),
        match_id: Some(created.match_id.clone()),
    };
    let conversation_id = backend::create_conversation(&app.bus, &conversation, app.config.ack_timeout())
        .await
        .map_err(ApiError::from_request)?;
    command(&app, &created).await?;
    metrics::counter!("edge_ingress_total", "route" => "matches").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "matchId": created.match_id, "conversationId": conversation_id })),
    ))
}

/// `DELETE /api/v1/matches/{matchId}`: the unmatch; 202 even for an unknown match.
async fn remove_match(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(match_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let match_id: MatchId =
        match_id.parse().map_err(|e: switchboard::contract::ids::InvalidId| ApiError::invalid(e.0))?;
    command(&app, &Unmatch { match_id }).await?;
    metrics::counter!("edge_ingress_total", "route" => "unmatch").increment(1);
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NotificationRequest {
    user_id: UserId,
    #[serde(rename = "type")]
    kind: NotificationKind,
    title: NotificationTitle,
    message: NotificationText,
    #[serde(default)]
    data: Option<NotificationData>,
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

/// `POST /api/v1/notifications`: `{ userId, type, title, message, data? }`; 202 `{ id }`. The
/// texts follow the contract's text rules (`switchboard::contract::text`).
async fn create_notification(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app.ingress_keys, &headers)?;
    let id = NotificationId::new();
    let create = notification_command(&body, id)?;
    command(&app, &create).await?;
    metrics::counter!("edge_ingress_total", "route" => "notifications").increment(1);
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}
