//! The reference for clients, backends and operators, `docs/reference.md` (feature
//! `typescript`, whose `ts-rs` type information it reads).
//!
//! [`generate`] writes the whole document. What has a Rust type comes from it: the client and
//! server events from their one lists (`client.rs`, `server.rs`) with every payload's and
//! reply's fields, types and doc comments as `ts-rs` declares them; the error codes from
//! [`ErrorCode`]'s variants; the configuration from [`SETTINGS`] (kept equal to [`KEYS`](crate::config::KEYS)
//! by a test); the bus message kinds from [`KINDS`] and [`FIXED_ROUTES`]. What has no type is
//! written here, next to the code that renders it: the rules of each event and who receives
//! each server event (the generator stops if an event has none, or a rule names no event), the
//! `connect_error` messages and the ingress routes (which `tests/e2e/reference.rs` checks
//! against the edge's `ConnectRefused` and the ingress's OpenAPI document), and the prose between.
//!
//! The file is checked in; `tests/e2e/reference.rs` fails while it differs from what the code
//! generates now, and [`REGENERATE`] rewrites it.

use std::{collections::BTreeMap, fmt::Write as _};

use ts_rs::{Config as TsConfig, TS};

use crate::{
    Config, Role,
    config::SETTINGS,
    contract::{
        ErrorCode,
        bus::{FIXED_ROUTES, KINDS},
        typescript::Contract,
    },
};

/// The generated file, relative to the workspace root.
pub const OUTPUT: &str = "docs/reference.md";

/// The command that regenerates [`OUTPUT`], from the workspace root.
pub const REGENERATE: &str = "cargo run -p switchboard --features typescript --example reference";

/// The rules of each client event, in words (the types say the shapes).
const CLIENT_RULES: &[(&str, &str)] = &[
    (
        "message:send",
        "The sender must be a participant. Success means the message is committed in the database. \
         The same `clientMessageId` from the same user in the same conversation returns the original \
         `messageId` and stores nothing new, so a send answered `timeout` or `unavailable` is retried \
         safely with the same `clientMessageId`. The other participants' sockets get `message:new`.",
    ),
    (
        "message:read",
        "Participant only; `messageId` must be a message of that conversation (`not_found` otherwise). \
         The other participants get `message:read`.",
    ),
    (
        "conversation:join",
        "Participant only, and the conversation must be open. Needed for the `typing:*` events of that \
         conversation; messages arrive without it.",
    ),
    ("conversation:leave", "Leaves the conversation's room; always succeeds."),
    (
        "typing:start",
        "The socket must have joined the conversation. The other joined sockets get `typing:start`; a \
         start with no stop expires after 6 s, and the others then get `typing:stop`.",
    ),
    (
        "typing:stop",
        "The socket must have joined the conversation. The other joined sockets get `typing:stop`.",
    ),
    (
        "messages:sync",
        "Participant only. Messages with `seq > afterSeq`, ascending; `limit` defaults to 50, larger \
         than 200 counts as 200, 0 is `invalid`. `hasMore` is true exactly when messages after the \
         page exist. This is how a client catches up after a reconnect, a gap in `seq` or \
         `sync:required`.",
    ),
    (
        "presence:query",
        "1 to 200 ids; more is `invalid`. Only users who share an open conversation with the caller are \
         answered, others are left out. `lastSeenAt` is when the user was last seen going offline \
         (null if never).",
    ),
    (
        "notifications:list",
        "The caller's own notifications, newest first; `limit` defaults to 50, larger than 200 counts \
         as 200. `unreadOnly` leaves out those already read.",
    ),
    ("notification:read", "The caller's own notifications only (another user's answers `forbidden`)."),
];

/// Who receives each server event.
const SERVER_AUDIENCE: &[(&str, &str)] = &[
    ("session", "The socket, right after it connects."),
    (
        "message:new",
        "Every socket of every participant, on every edge, except the socket that sent it. Each \
         socket sees a conversation's messages in `seq` order: 1, 2, 3, ... with no gaps and no \
         repeats.",
    ),
    ("message:read", "The other participants' sockets."),
    (
        "user:online",
        "Every connected user who shares an open conversation with `userId`, once, when the user's first socket connects.",
    ),
    (
        "user:offline",
        "The same users, once, after the user's last socket closed and `PRESENCE_OFFLINE_GRACE_MS` \
         passed without a new one (within 30 s for an edge that died).",
    ),
    (
        "notification:new",
        "The recipient's sockets; kept for the user if none is connected, and delivered on their next \
         connect. For type `match`, `data` is a [`MatchNotificationData`](#type-matchnotificationdata).",
    ),
    ("match:new", "Both users' sockets; `userId` is the other person."),
    (
        "match:removed",
        "Both users' sockets. Every socket of either user leaves the conversation's room within 1 s; \
         further `message:send`, `typing:*`, `conversation:join` and `messages:sync` on it answer \
         `forbidden`.",
    ),
    ("sync:required", "A socket whose edge lost its deliveries for a while; the socket stays connected."),
    ("typing:start", "The other sockets that joined the conversation."),
    ("typing:stop", "The other sockets that joined the conversation, also when a start expires."),
];

/// What each error code means to the one who receives it, and how the ingress answers it.
fn error_meaning(code: ErrorCode) -> (&'static str, &'static str) {
    match code {
        ErrorCode::Invalid => (
            "The input breaks a rule (shape, type, length, the text rules); `message` says which. Sending \
             the same input again fails again.",
            "400",
        ),
        ErrorCode::Forbidden => (
            "The caller may not do this. Anything the caller may not see (a conversation they are not \
             in, a closed one, another user's notification) answers `forbidden` whether or not it \
             exists.",
            "-",
        ),
        ErrorCode::NotFound => (
            "Something the caller may see does not hold what was named (a `messageId` not in that conversation).",
            "404, for a path no route serves (with `method_not_allowed`, 405, for a method the path does not take) \
             or a conversation that does not exist",
        ),
        ErrorCode::RateLimited => (
            "Past the socket's or the user's event budget (`RATE_LIMIT_*`, `USER_RATE_LIMIT_*`): the event \
             had no effect. Slow down.",
            "429, for a handshake past `HANDSHAKE_RATE_PER_SEC`",
        ),
        ErrorCode::Unavailable => (
            "A worker or the broker cannot be reached, or the edge is saturated (`CHAT_INFLIGHT_PER_SHARD`). \
             Retry later; retrying a send with the same `clientMessageId` is safe.",
            "503",
        ),
        ErrorCode::Timeout => (
            "No answer within `ACK_TIMEOUT_MS`: the outcome is unknown. Retrying with the same \
             `clientMessageId` is always safe.",
            "504",
        ),
    }
}

/// The `connect_error` messages the edge sends (its `ConnectRefused`), and what each means.
pub const CONNECT_ERRORS: &[(&str, &str)] = &[
    (
        "unauthorized",
        "No, unknown, expired or malformed session. No socket exists; connecting again with the same \
         session fails again.",
    ),
    (
        "unavailable",
        "The session could not be checked, or the user's deliveries could not be set up (database or \
         broker unreachable). Not a logout: retry later.",
    ),
    ("too_many_connections", "The user already has `MAX_SOCKETS_PER_USER` sockets on this edge."),
    (
        "rate_limited",
        "The client's address spent its budget of handshakes and `CONNECT`s (`HANDSHAKE_RATE_PER_SEC` / \
         `HANDSHAKE_BURST`); retrying a second later may work.",
    ),
];

/// One field of an ingress body.
#[derive(Debug)]
pub struct IngressField {
    /// As sent in JSON.
    pub name: &'static str,
    pub ty: &'static str,
    pub required: bool,
    pub rules: &'static str,
}

/// One ingress route. `request` names the type its body is parsed into
/// ([`contract::ingress`](crate::contract::ingress)); `tests/e2e/reference.rs` checks routes and
/// fields against the edge's OpenAPI document, which is built from those types.
#[derive(Debug)]
pub struct IngressRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub request: Option<&'static str>,
    pub body: &'static [IngressField],
    /// The query parameters, in the order the OpenAPI document lists them.
    pub query: &'static [IngressField],
    pub success: &'static str,
    pub notes: &'static str,
}

const fn field(name: &'static str, ty: &'static str, required: bool, rules: &'static str) -> IngressField {
    IngressField { name, ty, required, rules }
}

/// Every route of the ingress.
pub const INGRESS: &[IngressRoute] = &[
    IngressRoute {
        method: "POST",
        path: "/api/v1/emit",
        request: Some("EmitRequest"),
        body: &[
            field(
                "userId",
                "UserId",
                false,
                "Every socket of this user; exactly one of `userId` and `room`.",
            ),
            field(
                "room",
                "string",
                false,
                "`user:<userId>` or `conversation:<conversationId>` (the sockets that joined it).",
            ),
            field(
                "event",
                "string",
                true,
                "The event name: 1 to 128 characters, no control characters, not one Socket.IO reserves \
                 (`connect`, `connect_error`, `disconnect`, `disconnecting`, `newListener`, `removeListener`).",
            ),
            field("data", "any JSON", false, "The event's payload, as is; `null` when absent."),
        ],
        query: &[],
        success: "`202 {}` once the broker has confirmed it",
        notes: "Emits any event to a user's or a room's sockets, on every edge.",
    },
    IngressRoute {
        method: "POST",
        path: "/api/v1/conversations",
        request: Some("CreateConversationRequest"),
        body: &[field("participants", "Array<UserId>", true, "2 to 100 distinct users.")],
        query: &[],
        success: "`201 { conversationId }` once stored",
        notes: "Creates a conversation.",
    },
    IngressRoute {
        method: "GET",
        path: "/api/v1/conversations/{conversationId}/messages",
        request: None,
        body: &[],
        query: &[
            field(
                "afterSeq",
                "number",
                false,
                "The page holds the messages with a greater `seq`; 0 when absent.",
            ),
            field("limit", "number", false, "At least 1; 50 when absent, more than 200 counts as 200."),
        ],
        success: "`200 { messages, hasMore }`, a [`MessagesPage`](#type-messagespage)",
        notes: "A page of a conversation's history, ascending by `seq`, like a participant's `messages:sync` but for \
                any conversation that exists, closed ones too (404 `not_found` for one that never did). `hasMore` \
                is true exactly when messages after the page exist: ask again with `afterSeq` = the page's last \
                `seq`.",
    },
    IngressRoute {
        method: "POST",
        path: "/api/v1/matches",
        request: Some("MatchRequest"),
        body: &[
            field("matchId", "MatchId", true, "The host application's id; the request is idempotent by it."),
            field("userIds", "[UserId, UserId]", true, "Two different users."),
            field("createdAt", "string", false, "RFC 3339; when the match happened."),
        ],
        query: &[],
        success: "`202 { matchId, conversationId }` once the conversation is stored and the broker has confirmed \
                  the match; the same answer for every repeat",
        notes: "A match makes (once) a conversation between the two users, a notification of type `match` \
                for each, and `match:new` to both. It needs the messages worker (504 without one). A `matchId` \
                is single-use: a removed match is never revived (a re-match is a new `matchId`), and the same \
                `matchId` with other users is 400 `invalid`.",
    },
    IngressRoute {
        method: "DELETE",
        path: "/api/v1/matches/{matchId}",
        request: None,
        body: &[],
        query: &[],
        success: "`202 {}` once the broker has confirmed it, also for an unknown match",
        notes: "The unmatch: the match's conversation is closed for good, both users get `match:removed`, \
                every socket of either leaves its room within 1 s, and neither gets the other's presence any \
                more (unless they share another conversation).",
    },
    IngressRoute {
        method: "POST",
        path: "/api/v1/presence/query",
        request: Some("PresenceRequest"),
        body: &[field("userIds", "Array<UserId>", true, "1 to 200 users.")],
        query: &[],
        success: "`200 { users }`, a [`PresenceReply`](#type-presencereply)",
        notes: "Whether users are online, and when each was last seen going offline (`lastSeenAt`, null if \
                never): any users, not only someone's contacts. Every user named is answered; one never seen \
                is offline.",
    },
    IngressRoute {
        method: "GET",
        path: "/api/v1/users/{userId}/conversations",
        request: None,
        body: &[],
        query: &[],
        success: "`200 { conversations }`, newest first",
        notes: "Every conversation the user takes part in, open or closed, newest first: `{ conversations: [{ \
                conversationId, participants, matchId, createdAt, closedAt, lastSeq }] }`, with `matchId` null \
                for a conversation not made by a match and `closedAt` null while it is open. A user in none (or \
                unknown) has an empty list.",
    },
    IngressRoute {
        method: "DELETE",
        path: "/api/v1/users/{userId}/sockets",
        request: None,
        body: &[],
        query: &[field(
            "revokeSessions",
            "boolean",
            false,
            "Also forget the sessions the edges have cached for the user (`database` mode), so a reconnect \
             looks the session up again; `false` when absent.",
        )],
        success: "`202 {}` once the broker has confirmed it",
        notes: "Ends every socket of the user on every edge: a logout everywhere, a ban. Each edge disconnects \
                them within moments (the clients see `io server disconnect` and do not reconnect by themselves). \
                It does not prevent a new connection: delete or expire the user's sessions in the host \
                application first, and set `revokeSessions` so that no edge serves them from its cache \
                (`AUTH_CACHE_TTL_MS`). A JWT stays valid until it expires.",
    },
    IngressRoute {
        method: "POST",
        path: "/api/v1/notifications",
        request: Some("NotificationRequest"),
        body: &[
            field("userId", "UserId", true, "The recipient."),
            field(
                "type",
                "string",
                true,
                "1 to 64 characters under the text rules (`match`, `system`, ...).",
            ),
            field("title", "string", true, "1 to 200 characters under the text rules."),
            field("message", "string", true, "1 to 4000 characters under the text rules."),
            field("data", "any JSON", false, "Its strings and keys follow the text rules' character rules."),
        ],
        query: &[],
        success: "`202 { id }` once the broker has confirmed it",
        notes: "Stored in the user's inbox and delivered as `notification:new`; kept until the user connects \
                if they are offline.",
    },
];

/// The whole document.
pub fn generate() -> String {
    let types = Types::from(Contract::collect());
    check_prose(&types);

    let mut out = String::new();
    out.push_str(&format!(
        "<!-- Generated from the Rust types by shared/src/reference.rs. Do not edit: run\n     \
         `{REGENERATE}`\n     after changing them; tests/e2e/reference.rs fails until the two agree. -->\n\n"
    ));
    out.push_str(INTRO);
    processes(&mut out);
    connecting(&mut out);
    client_events(&mut out, &types);
    server_events(&mut out, &types);
    error_codes(&mut out, &types);
    ingress(&mut out, &types);
    configuration(&mut out);
    bus(&mut out);
    operations(&mut out);
    type_list(&mut out, &types);
    out
}

const INTRO: &str = "# Switchboard reference

What clients, backends and operators can rely on: the Socket.IO events and their payloads, the \
error codes, the HTTP ingress, the configuration, the bus and the metrics. Payloads are JSON \
objects with camelCase fields; unknown fields are ignored, a missing required field or a value of \
the wrong type is `invalid`. User ids and match ids are chosen by the host application (1 to 128 \
characters of `[A-Za-z0-9_.:@-]`); conversation, message and notification ids are UUIDs (v7) \
minted by Switchboard. Timestamps are RFC 3339 strings in UTC. The TypeScript kit's types \
(`clients/typescript/src/generated/contract.ts`) come from the same Rust types.

- [Processes](#processes)
- [Connecting](#connecting)
- [Client events](#client-events)
- [Server events](#server-events)
- [Error codes](#error-codes)
- [Ingress](#ingress)
- [Configuration](#configuration)
- [Bus](#bus)
- [Operations and metrics](#operations-and-metrics)
- [Types](#types)
";

/// What each binary does.
const PROCESSES: &[(Role, &str)] = &[
    (Role::Edge, "Socket.IO for clients (websocket and long-polling), the HTTP ingress for backends"),
    (
        Role::Messages,
        "Conversations and messages: membership, persistence, history, read receipts, the fan-out of `message:new`",
    ),
    (Role::Presence, "Online and offline across every edge; answers `presence:query`"),
    (
        Role::Notifier,
        "Matches and the notification inbox: a match's conversation and notifications, delivery, keeping them for offline users",
    ),
];

fn processes(out: &mut String) {
    out.push_str(
        "\n## Processes\n\n\
         Four binaries; any number of copies of each may run, and they talk only over the \
         [bus](#bus). Each serves health and metrics on its port ([Operations and \
         metrics](#operations-and-metrics)).\n\n\
         | binary | role | port (default) |\n| --- | --- | --- |\n",
    );
    let defaults = Config::default();
    for (role, what) in PROCESSES {
        let variable = if *role == Role::Edge { "WEBSOCKET_PORT" } else { "METRICS_PORT" };
        let _ = writeln!(
            out,
            "| `{}` | {what} | `{variable}` (`{}`) |",
            role.binary(),
            defaults.http_port(*role)
        );
    }
}

fn connecting(out: &mut String) {
    out.push_str(
        "\n## Connecting\n\n\
         Socket.IO v4 clients (the official `socket.io-client` 4.x, websocket or long-polling) connect \
         to the edge on `WEBSOCKET_PORT`, path `/socket.io/`, namespace `/`. The session token comes \
         from, in order: the cookie `AUTH_COOKIE_NAME`; `auth: { token }` in the handshake; an \
         `Authorization: Bearer` header. In `database` mode it is looked up with `AUTH_SESSION_QUERY`; \
         in `jwt` mode it is verified with `AUTH_JWT_SECRET` (HS256, `sub` = user id).\n\n\
         Once `connect` fires, everything addressed to the user reaches the socket, and the server \
         sends [`session`](#session). A session that expires while its socket is connected does not \
         close the socket.\n\n\
         Before Socket.IO, a handshake whose `Origin` is not in `ALLOWED_ORIGINS` gets HTTP 403, and \
         one past the address's budget (`HANDSHAKE_RATE_PER_SEC`) HTTP 429 \
         `{ error: { code: \"rate_limited\", message } }` with `Retry-After: 1`. A packet larger than \
         `MAX_FRAME_BYTES` closes that connection only; a connection that sends no `CONNECT` within \
         `CONNECT_TIMEOUT_MS` is closed.\n\n\
         ### Connect errors\n\n\
         A refused connection gets `connect_error` with one of these messages, and no socket \
         exists:\n\n\
         | message | meaning |\n| --- | --- |\n",
    );
    for (message, meaning) in CONNECT_ERRORS {
        let _ = writeln!(out, "| `{message}` | {meaning} |");
    }
}

fn client_events(out: &mut String, types: &Types) {
    out.push_str(
        "\n## Client events\n\n\
         Every client event takes an acknowledgement: `{ success: true, ...reply }` with the reply's \
         fields below, or `{ success: false, error }` with `error` an [`AckError`](#type-ackerror) \
         `{ code, message }` ([error codes](#error-codes)). Bad input never closes the socket and \
         never reaches another user. An unknown event name is answered `invalid` when it has an ack \
         and otherwise ignored. Each socket may send `RATE_LIMIT_PER_SEC` events per second (bursts \
         of `RATE_LIMIT_BURST`), each user `USER_RATE_LIMIT_PER_SEC` on one edge; past either the \
         answer is `rate_limited` and the event has no effect. The events of one socket are handled \
         in the order it sent them.\n",
    );
    for (event, payload, reply) in &types.client_events {
        let _ = write!(out, "\n### `{event}`\n\n{}\n\n", lookup(CLIENT_RULES, event));
        let _ = writeln!(out, "Payload: {}\n", type_link(payload));
        fields_table(out, types, payload);
        let _ = writeln!(out, "\nSuccess reply, next to `success: true`: {}\n", type_link(reply));
        fields_table(out, types, reply);
    }
}

fn server_events(out: &mut String, types: &Types) {
    out.push_str(
        "\n## Server events\n\n\
         What the server emits to sockets. A backend may also emit any other event name, with any \
         payload, to a user's sockets or a room ([Ingress](#ingress), [Bus](#bus)).\n",
    );
    for (event, payload) in &types.server_events {
        let _ = write!(out, "\n### `{event}`\n\nWho gets it: {}\n\n", lookup(SERVER_AUDIENCE, event));
        let _ = writeln!(out, "Payload: {}\n", type_link(payload));
        fields_table(out, types, payload);
    }
    out.push_str(
        "\nPresence: a user is online while at least one of their sockets is connected to any edge. A \
         restart of the presence worker sends no false offline/online events.\n",
    );
}

fn error_codes(out: &mut String, types: &Types) {
    out.push_str(
        "\n## Error codes\n\n\
         The `code` of an [`AckError`](#type-ackerror): in a failed acknowledgement, and in the \
         ingress's error body `{ error: { code, message } }`. `message` is for people and never \
         carries internals.\n\n\
         | code | meaning | ingress status |\n| --- | --- | --- |\n",
    );
    for code in types.union_members::<ErrorCode>() {
        let parsed: ErrorCode = serde_json::from_value(serde_json::Value::String(code.clone()))
            .unwrap_or_else(|e| panic!("ErrorCode {code:?} does not parse back: {e}"));
        let (meaning, status) = error_meaning(parsed);
        let _ = writeln!(out, "| `{code}` | {meaning} | {status} |");
    }
}

fn ingress(out: &mut String, types: &Types) {
    out.push_str(
        "\n## Ingress\n\n\
         HTTP on the edge's port for backends, enabled by `INGRESS_API_KEYS`. The OpenAPI 3.1 document \
         of every route, generated from the same types, is [`docs/openapi.json`](openapi.json); the \
         edge serves it at `GET /api/v1/openapi.json`, the one route that needs no key. Every other \
         request needs `Authorization: Bearer <one of INGRESS_API_KEYS>`; without a valid key the \
         answer is 401 `{ error: { code: \"unauthorized\", message } }` (with `WWW-Authenticate: \
         Bearer`). Bodies are JSON objects of at most 2 MB (413 `too_large` past that); unknown \
         fields, malformed JSON, a value other than an object, or a field breaking its rule are 400 \
         `{ error: { code: \"invalid\", message } }`. A worker that does not answer within \
         `ACK_TIMEOUT_MS` gives 504 (`timeout`); a broker that does not confirm, or a worker nothing \
         serves, 503 (`unavailable`). The text rules are those of [`Content`](#type-content).\n\n\
         | request | success |\n| --- | --- |\n",
    );
    for route in INGRESS {
        let _ = writeln!(out, "| `{} {}` | {} |", route.method, route.path, route.success);
    }
    for route in INGRESS {
        let _ = write!(out, "\n### `{} {}`\n\n{}\n\n", route.method, route.path, route.notes);
        if !route.query.is_empty() {
            out.push_str("| query parameter | type | required | rules |\n| --- | --- | --- | --- |\n");
            for f in route.query {
                let ty = types.render(f.ty);
                let _ = writeln!(out, "| `{}` | {ty} | {} | {} |", f.name, yes_no(f.required), f.rules);
            }
            out.push('\n');
        }
        if route.body.is_empty() {
            out.push_str("No body.\n");
            continue;
        }
        out.push_str("| field | type | required | rules |\n| --- | --- | --- | --- |\n");
        for f in route.body {
            let ty = types.render(f.ty);
            let _ = writeln!(out, "| `{}` | {ty} | {} | {} |", f.name, yes_no(f.required), f.rules);
        }
    }
}

fn configuration(out: &mut String) {
    out.push_str(
        "\n## Configuration\n\n\
         Every binary reads built-in defaults, then an optional TOML file (`SWITCHBOARD_CONFIG`, else \
         `./switchboard.toml` when it exists; keys are the variable names in lower case), then the \
         environment, which wins. A bad value stops the process at start with one line naming the \
         variable (never its value), exit code 64, before any port is bound. `RUST_LOG` sets the log \
         level.\n\n\
         | variable | default | used by | meaning |\n| --- | --- | --- | --- |\n",
    );
    for s in SETTINGS {
        let _ = writeln!(out, "| `{}` | {} | {} | {} |", s.key, escape_cell(s.default), s.used_by, s.meaning);
    }
}

fn bus(out: &mut String) {
    out.push_str(
        "\n## Bus\n\n\
         Processes talk only over RabbitMQ. The exchanges, queues, routing keys and every message \
         body are described in [asyncapi.yaml](asyncapi.yaml), so a backend in any language can \
         publish without reading Rust. What a backend typically publishes is `edge.deliver` (an \
         event for sockets), `match.created`, `match.remove` and `notification.create`; Rust \
         backends use `switchboard::backend` instead. Every message kind, with its fixed route when \
         it has one:\n\n\
         | kind | exchange | routing key |\n| --- | --- | --- |\n",
    );
    for kind in KINDS {
        match FIXED_ROUTES.iter().find(|(k, _, _)| k == kind) {
            Some((_, exchange, key)) => {
                let _ = writeln!(out, "| `{kind}` | `{exchange}` | `{key}` |");
            }
            None => {
                let _ = writeln!(out, "| `{kind}` | from its content | from its content |");
            }
        }
    }
    out.push_str(
        "\n### Domain events\n\n\
         What happened, for backends: the kinds above named `domain.*`, each published on \
         `events.topic` with its kind as the routing key. Declare a queue of your own and bind it \
         to the keys you want (`domain.#` for all); no Switchboard process consumes them. The \
         bodies are the clients' own payloads where clients see the same fact \
         (`domain.message.stored` is the `message:new`, with the same `id` and `seq`), and \
         [asyncapi.yaml](asyncapi.yaml) describes each. Nothing is published while nobody \
         listens: a key the broker returns (no queue bound) stays unpublished for one second, so \
         a new binding receives everything from at most one second after it on. At least once \
         while the broker takes the publishes (a redelivered command publishes again, with the \
         same ids); a publish the broker fails is logged and counted, not retried.\n",
    );
}

fn operations(out: &mut String) {
    out.push_str(
        "\n## Operations and metrics\n\n\
         Every process serves `GET /healthz` (200 while it runs), `GET /readyz` (503, naming the \
         failing checks, while the broker or the database is unreachable or once shutdown has \
         begun) and `GET /metrics` (Prometheus text format): the edge on `WEBSOCKET_PORT`, the \
         workers on `METRICS_PORT`. Every metric is listed in [metrics.md](metrics.md).\n\n\
         On SIGTERM a process stops taking new work, finishes or hands back what is in flight and \
         exits 0 within `SHUTDOWN_GRACE_MS`. With the broker or the database down, processes stay \
         up, report not ready, reconnect with backoff and resume; nothing acknowledged to anyone is \
         lost. A message a worker can never handle is parked in the queue `dead.letters` (see \
         [asyncapi.yaml](asyncapi.yaml)).\n\n\
         ### Traces\n\n\
         With `OTEL_EXPORTER_OTLP_ENDPOINT` set, every process exports spans over OTLP/HTTP \
         (protobuf, to `<endpoint>/v1/traces`), and each chat message leaves one trace across \
         the processes it crosses: the client event at the sending edge (a span named after the \
         event, such as `message:send`), `shard batch`, `commit` and `fan-out` at the messages \
         worker, and `emit` at each edge that hands it to a socket. The context travels as a \
         W3C `traceparent`: in the AMQP header of that name on a message of its own, and in the \
         `traceparent` field of each item of a batch (`BatchedRequest`, `Deliver`). A batch's \
         spans continue the trace of its first item and link to the others', so a message alone \
         in its batch, as at ordinary load, has one whole trace. Unset, no span is recorded and \
         nothing is added to any message. Resources carry `service.name` (the binary, unless \
         `OTEL_SERVICE_NAME`), `service.instance.id` (one per process) and `service.version`; \
         the SDK's `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` variables apply. Spans that cannot be \
         exported (no collector) are dropped without a log line.\n",
    );
}

fn type_list(out: &mut String, types: &Types) {
    out.push_str(
        "\n## Types\n\n\
         Every type named above, as TypeScript declares it.\n",
    );
    for (name, declared) in &types.declarations {
        let _ = write!(out, "\n### Type `{name}`\n\n");
        if !declared.docs.is_empty() {
            let _ = write!(out, "{}\n\n", declared.docs);
        }
        let _ = writeln!(out, "```ts\n{}\n```", declared.decl_without_docs());
        if !declared.fields().is_empty() {
            out.push('\n');
            fields_table(out, types, name);
        }
    }
}

fn lookup(list: &[(&'static str, &'static str)], event: &str) -> &'static str {
    list.iter().find(|(name, _)| *name == event).map(|(_, text)| *text).unwrap_or_default()
}

/// Every event has its words and every word has its event.
fn check_prose(types: &Types) {
    let clients: Vec<&str> = types.client_events.iter().map(|e| e.0).collect();
    let servers: Vec<&str> = types.server_events.iter().map(|e| e.0).collect();
    for (list, events, what) in
        [(CLIENT_RULES, &clients, "CLIENT_RULES"), (SERVER_AUDIENCE, &servers, "SERVER_AUDIENCE")]
    {
        for event in events {
            assert!(
                list.iter().any(|(name, _)| name == event),
                "{event} has no entry in {what} (shared/src/reference.rs): say it there"
            );
        }
        for (name, _) in list {
            assert!(
                events.contains(name),
                "{what} (shared/src/reference.rs) describes {name}, which is no such event"
            );
        }
    }
}

/// An identifier type other than the client's own message id (whose comment gives its rules).
fn is_id(name: &str) -> bool {
    name.ends_with("Id") && name != "ClientMessageId"
}

fn type_link(name: &str) -> String {
    format!("[`{name}`](#type-{})", name.to_ascii_lowercase())
}

fn code(text: &str) -> String {
    format!("`{}`", text.replace('|', "\\|"))
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn yes_no(required: bool) -> &'static str {
    if required { "yes" } else { "no" }
}

/// The fields of an object type as a table, or a sentence for the empty object.
fn fields_table(out: &mut String, types: &Types, name: &str) {
    let Some(declared) = types.declarations.get(name) else {
        let _ = writeln!(out, "{}", code(name));
        return;
    };
    let fields = declared.fields();
    if fields.is_empty() {
        out.push_str("No fields: `{}`.\n");
        return;
    }
    out.push_str("| field | type | required | notes |\n| --- | --- | --- | --- |\n");
    for f in fields {
        let ty = types.render(&f.ty);
        // A field without its own comment shows its type's rules (message text, client ids);
        // the ids' comments say what they name, which the type's link already says.
        let notes = match types.declarations.get(&f.ty) {
            Some(inner) if f.docs.is_empty() && !inner.is_object() && !is_id(&f.ty) => inner.docs.clone(),
            _ => f.docs.clone(),
        };
        let _ = writeln!(out, "| `{}` | {ty} | {} | {} |", f.name, yes_no(!f.optional), escape_cell(&notes));
    }
}

/// The contract as the TypeScript generator collects it, with each doc comment as plain text.
struct Types {
    config: TsConfig,
    /// TypeScript name -> declaration, sorted by name.
    declarations: BTreeMap<String, Declared>,
    client_events: Vec<(&'static str, String, String)>,
    server_events: Vec<(&'static str, String)>,
}

struct Declared {
    /// The doc comment as one paragraph.
    docs: String,
    /// `type Name = ...;`
    decl: String,
}

struct Field {
    name: String,
    optional: bool,
    ty: String,
    docs: String,
}

impl From<Contract> for Types {
    fn from(contract: Contract) -> Self {
        let declarations = contract
            .declarations
            .into_iter()
            .map(|(name, declared)| {
                (name, Declared { docs: plain_docs(&declared.docs), decl: declared.decl })
            })
            .collect();
        Types {
            config: contract.config,
            declarations,
            client_events: contract.client_events,
            server_events: contract.server_events,
        }
    }
}

impl Types {
    /// A field's type, with links to the declared types it names: a declared type, an array
    /// of one, or a map from one to another; anything else as code.
    fn render(&self, ty: &str) -> String {
        let link = |name: &str| self.declarations.contains_key(name).then(|| type_link(name));
        if let Some(linked) = link(ty) {
            return linked;
        }
        if let Some(element) = ty.strip_prefix("Array<").and_then(|t| t.strip_suffix('>'))
            && let Some(linked) = link(element)
        {
            return format!("array of {linked}");
        }
        if let Some((key, value)) =
            ty.strip_prefix("{ [key in ").and_then(|t| t.strip_suffix(" }")).and_then(|t| t.split_once("]: "))
            && let (Some(key), Some(value)) = (link(key), link(value))
        {
            return format!("object from {key} to {value}");
        }
        code(ty)
    }

    /// The string members of a union of literals, such as [`ErrorCode`]'s.
    fn union_members<T: TS + 'static>(&self) -> Vec<String> {
        let decl = T::decl(&self.config);
        let body = decl.split_once('=').map(|(_, body)| body).unwrap_or_default();
        body.trim().trim_end_matches(';').split('|').map(|m| m.trim().trim_matches('"').to_owned()).collect()
    }
}

impl Declared {
    /// The right-hand side of the declaration.
    fn body(&self) -> &str {
        self.decl.split_once(" = ").map(|(_, body)| body).unwrap_or_default().trim().trim_end_matches(';')
    }

    fn is_object(&self) -> bool {
        self.body().starts_with('{') || self.body() == "Record<symbol, never>"
    }

    /// The declaration on one line, its field comments left out (the tables show them).
    fn decl_without_docs(&self) -> String {
        let mut out = String::new();
        let mut rest = self.decl.as_str();
        while let Some(start) = rest.find("/**") {
            out.push_str(&rest[..start]);
            rest = rest[start..].split_once("*/").map(|(_, after)| after).unwrap_or_default();
        }
        out.push_str(rest);
        let one_line: Vec<&str> = out.split_whitespace().collect();
        one_line.join(" ")
    }

    /// The fields of an object type, in order; empty for anything else.
    fn fields(&self) -> Vec<Field> {
        let body = self.body();
        let Some(inner) = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) else { return Vec::new() };
        split_top_level(inner)
            .into_iter()
            .filter_map(|part| {
                let (docs, field) = match part.rfind("*/") {
                    Some(end) => (plain_docs(&part[..end + 2]), part[end + 2..].trim()),
                    None => (String::new(), part.trim()),
                };
                let (name, ty) = field.split_once(':')?;
                let (name, optional) = match name.trim().strip_suffix('?') {
                    Some(name) => (name, true),
                    None => (name.trim(), false),
                };
                Some(Field { name: name.to_owned(), optional, ty: ty.trim().to_owned(), docs })
            })
            .collect()
    }
}

/// Splits the fields of an object body at the commas outside brackets and comments.
fn split_top_level(inner: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth, mut comment) = (Vec::new(), String::new(), 0i32, false);
    let chars: Vec<char> = inner.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '/' if !comment && chars.get(i + 1) == Some(&'*') => comment = true,
            '/' if comment && i > 0 && chars[i - 1] == '*' => comment = false,
            '{' | '[' | '(' | '<' if !comment => depth += 1,
            '}' | ']' | ')' | '>' if !comment => depth -= 1,
            ',' if !comment && depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// A JSDoc comment as one paragraph of Markdown.
fn plain_docs(jsdoc: &str) -> String {
    let words: Vec<&str> = jsdoc
        .lines()
        .map(|line| {
            line.trim().trim_start_matches("/**").trim_end_matches("*/").trim().trim_start_matches('*').trim()
        })
        .filter(|line| !line.is_empty())
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_the_types() {
        let file = generate();
        let has = |text: &str| assert!(file.contains(text), "{text:?} is not in:\n{file}");
        has("| `clientMessageId` | [`ClientMessageId`](#type-clientmessageid) | no |");
        has(
            "| `readAt` | `string` | no | When the user marked it read; `notifications:list` shows it, pushes leave it out. |",
        );
        has(
            "| `lastSeenAt` | `string \\| null` | yes | When the user was last seen going offline; null if never. |",
        );
        has("| `not_found` |");
        has("| `RABBITMQ_HOST` | `127.0.0.1` | all |");
        has("### `POST /api/v1/emit`");
        has("| `too_many_connections` |");
    }
}
