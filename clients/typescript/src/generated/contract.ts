// Generated from the Rust contract types (shared/src/contract) by ts-rs. Do not edit:
// after changing them run `clients/typescript/generate`; a test fails until the two agree.

/**
 * The answer of a request that was taken and has nothing to tell: `{}`.
 */
export type Accepted = Record<symbol, never>;

/**
 * A failure as the client sees it. `message` is for people and never carries internals.
 */
export type AckError = { code: ErrorCode, message: string, };

/**
 * The client's own id for a send, which makes retries safe: 1 to 128 printable characters.
 */
export type ClientMessageId = string;

/**
 * Message text: 1 to 4000 characters once surrounding white space is trimmed (stored
 * trimmed), no control characters but newline and tab, every bidi embedding, override or
 * isolate closed, and something visible (see `switchboard::contract::text`).
 */
export type Content = string;

/**
 * `201` of `POST /api/v1/conversations`.
 */
export type ConversationCreatedReply = { conversationId: ConversationId, };

/**
 * A conversation: two or more participants and their ordered messages.
 */
export type ConversationId = string;

/**
 * `conversation:join`, `conversation:leave`, `typing:start`, `typing:stop`.
 */
export type ConversationRef = { conversationId: ConversationId, };

/**
 * One conversation of a user.
 */
export type ConversationSummary = { conversationId: ConversationId, 
/**
 * Every participant, the user included, sorted.
 */
participants: Array<UserId>, 
/**
 * The match it was made for; null for one made with `POST /api/v1/conversations`.
 */
matchId: MatchId | null, createdAt: string, 
/**
 * When an unmatch closed it for good; null while it is open.
 */
closedAt: string | null, 
/**
 * The `seq` of its newest message; 0 before the first.
 */
lastSeq: number, };

/**
 * `POST /api/v1/conversations`.
 */
export type CreateConversationRequest = { 
/**
 * 2 to 100 distinct users.
 */
participants: Array<UserId>, };

/**
 * The query of `DELETE /api/v1/users/{userId}/sockets`.
 */
export type DisconnectParams = { 
/**
 * Also forget the sessions the edges have cached for the user (`database` auth mode), so
 * a reconnect looks the session up again; `false` when absent.
 */
revokeSessions?: boolean, };

/**
 * `POST /api/v1/emit`: an event for a user's sockets or a room's, on every edge. Exactly one
 * of `userId` and `room`.
 */
export type EmitRequest = { 
/**
 * Every socket of this user; exactly one of `userId` and `room`.
 */
userId?: UserId, 
/**
 * The sockets of a room; exactly one of `userId` and `room`.
 */
room?: Room, event: EventName, 
/**
 * The event's payload, as is; `null` when absent.
 */
data?: JsonValue, };

/**
 * The empty success reply `{}`.
 */
export type Empty = Record<symbol, never>;

/**
 * Every refusal of the ingress: `{ error: { code, message } }`.
 */
export type ErrorBody = { error: ErrorDetail, };

/**
 * The contract's error codes. A client can act on each: fix the input, stop trying, back off,
 * or retry (`timeout` and `unavailable` are safe to retry with the same `clientMessageId`).
 */
export type ErrorCode = "invalid" | "forbidden" | "not_found" | "rate_limited" | "unavailable" | "timeout";

/**
 * What went wrong.
 */
export type ErrorDetail = { 
/**
 * One of the contract's error codes (`invalid`, `unavailable`, `timeout`, ...) or one only
 * HTTP has: `unauthorized`, `not_found`, `method_not_allowed`, `too_large`.
 */
code: string, 
/**
 * For people; never carries internals.
 */
message: string, };

/**
 * A Socket.IO event name a backend may emit: 1 to 128 characters, no control characters (they
 * would end up in logs), and not one of the names Socket.IO reserves for itself.
 */
export type EventName = string;

export type JsonValue = number | string | boolean | Array<JsonValue> | { [key in string]: JsonValue } | null;

/**
 * `202` of `POST /api/v1/matches`: the match and its conversation, the same for every repeat.
 */
export type MatchAccepted = { matchId: MatchId, conversationId: ConversationId, };

/**
 * A match, named by the host application; matches are idempotent by this id.
 */
export type MatchId = string;

/**
 * `match:new`: `user_id` is the other person.
 */
export type MatchNew = { matchId: MatchId, 
/**
 * The other person.
 */
userId: UserId, 
/**
 * The conversation the match opened between the two.
 */
conversationId: ConversationId, createdAt: string, };

/**
 * `data` of a notification of type `match`.
 */
export type MatchNotificationData = { matchId: MatchId, conversationId: ConversationId, otherUserId: UserId, };

/**
 * `match:removed`
 */
export type MatchRemoved = { matchId: MatchId, conversationId: ConversationId, };

/**
 * `POST /api/v1/matches`: two users matched in the host application.
 */
export type MatchRequest = { 
/**
 * The host application's id; the request is idempotent by it.
 */
matchId: MatchId, 
/**
 * Two different users.
 */
userIds: [UserId, UserId], 
/**
 * When the match happened (RFC 3339); absent: when the notifier handles it.
 */
createdAt?: string, };

/**
 * A stored message.
 */
export type MessageId = string;

/**
 * `message:new`; also the element of a `messages:sync` page.
 */
export type MessageNew = { id: MessageId, conversationId: ConversationId, senderId: UserId, 
/**
 * The text as stored (trimmed).
 */
content: string, 
/**
 * Its place in the conversation: 1, 2, 3, ... with no gaps and no repeats.
 */
seq: number, 
/**
 * When it was stored.
 */
createdAt: string, clientMessageId?: ClientMessageId, };

/**
 * `message:read`
 */
export type MessageRead = { conversationId: ConversationId, messageId: MessageId, };

/**
 * `message:read`: a participant read up to `message_id`.
 */
export type MessageReadEvent = { conversationId: ConversationId, messageId: MessageId, 
/**
 * Who read.
 */
userId: UserId, readAt: string, };

/**
 * `message:send`
 */
export type MessageSend = { conversationId: ConversationId, content: Content, clientMessageId?: ClientMessageId, };

/**
 * Reply to `message:send`: the stored message's id and place.
 */
export type MessageSent = { messageId: MessageId, 
/**
 * Its place in the conversation: 1, 2, 3, ... with no gaps.
 */
seq: number, 
/**
 * When it was stored.
 */
createdAt: string, };

/**
 * Reply to `messages:sync`.
 */
export type MessagesPage = { 
/**
 * Ascending by `seq`.
 */
messages: Array<MessageNew>, 
/**
 * Whether messages after this page exist.
 */
hasMore: boolean, };

/**
 * The query of `GET /api/v1/conversations/{conversationId}/messages`: a page of the
 * conversation's history, like `messages:sync`.
 */
export type MessagesParams = { 
/**
 * The page holds the messages with a greater `seq`: 0 (the default) for the first page,
 * else the last `seq` of the page before.
 */
afterSeq?: number, 
/**
 * At least 1; 50 when absent, 200 at most (more counts as 200).
 */
limit?: number, };

/**
 * `messages:sync`
 */
export type MessagesSync = { conversationId: ConversationId, 
/**
 * The last `seq` the client has; 0 for everything.
 */
afterSeq: number, 
/**
 * At least 1; 50 when absent, 200 at most (more counts as 200).
 */
limit?: number, };

/**
 * `202` of `POST /api/v1/notifications`: the id the notification is stored under.
 */
export type NotificationAccepted = { id: NotificationId, };

/**
 * A notification's `data`: any JSON whose strings and keys pass the character rules of the
 * text rules (`switchboard::contract::text`): PostgreSQL's `jsonb` refuses `\u0000`, and a
 * client shows these strings.
 */
export type NotificationData = JsonValue;

/**
 * A stored notification in a user's inbox.
 */
export type NotificationId = string;

/**
 * A notification's `type` (`match`, `system`, ...): 1 to 64 characters under the text
 * rules (`switchboard::contract::text`).
 */
export type NotificationKind = string;

/**
 * `notification:new`; also the element of a `notifications:list` page.
 */
export type NotificationNew = { id: NotificationId, 
/**
 * What kind of notification: `match`, or any type a backend chose.
 */
type: string, title: string, message: string, 
/**
 * The recipient.
 */
userId: UserId, 
/**
 * When it was created.
 */
timestamp: string, 
/**
 * Whatever the sender attached; for type `match`, a `MatchNotificationData`.
 */
data?: JsonValue, 
/**
 * When the user marked it read; `notifications:list` shows it, pushes leave it out.
 */
readAt?: string, };

/**
 * `notification:read`
 */
export type NotificationRead = { id: NotificationId, };

/**
 * `POST /api/v1/notifications`: a notification for a user's inbox.
 */
export type NotificationRequest = { 
/**
 * The recipient.
 */
userId: UserId, type: NotificationKind, title: NotificationTitle, message: NotificationText, 
/**
 * Absent and `null` are the same: no data.
 */
data?: NotificationData, };

/**
 * A notification's `message`: 1 to 4000 characters under the text rules
 * (`switchboard::contract::text`).
 */
export type NotificationText = string;

/**
 * A notification's `title`: 1 to 200 characters under the text rules
 * (`switchboard::contract::text`).
 */
export type NotificationTitle = string;

/**
 * `notifications:list`
 */
export type NotificationsList = { 
/**
 * Only the notifications not read yet; false when absent.
 */
unreadOnly?: boolean, 
/**
 * At least 1; 50 when absent, 200 at most (more counts as 200).
 */
limit?: number, };

/**
 * Reply to `notifications:list`, newest first.
 */
export type NotificationsPage = { notifications: Array<NotificationNew>, };

/**
 * `presence:query`
 */
export type PresenceQuery = { userIds: Array<UserId>, };

/**
 * Reply to `presence:query`: only the caller's contacts appear.
 */
export type PresenceReply = { users: { [key in UserId]: UserPresence }, };

/**
 * `POST /api/v1/presence/query`: the presence of any users, contacts or not.
 */
export type PresenceRequest = { 
/**
 * 1 to 200 users; each is answered once, whether or not it was ever seen.
 */
userIds: Array<UserId>, };

/**
 * A Socket.IO room as the contract names them (docs/reference.md, Ingress): every socket of a user, or the
 * sockets that joined a conversation.
 */
export type Room = `user:${UserId}` | `conversation:${ConversationId}`;

/**
 * `session`: sent to a socket right after it connects.
 */
export type Session = { userId: UserId, 
/**
 * The server's clock when the socket connected.
 */
serverTime: string, };

/**
 * `sync:required`: this socket's edge lost its deliveries for a while (its queue went away
 * with the broker, and what was routed to it meanwhile with it). Anything sent to this socket
 * since `since` may be missing: the client catches up as after a reconnect, with
 * `messages:sync` from the last `seq` it saw in each conversation (and `notifications:list`
 * if it keeps a list; unread notifications are also pushed again). The socket stays
 * connected and its rooms stay joined.
 */
export type SyncRequired = { 
/**
 * When the edge stopped receiving deliveries.
 */
since: string, };

/**
 * `typing:start` and `typing:stop` share this body; [`Typing::START`] and [`Typing::STOP`] name them.
 */
export type Typing = { conversationId: ConversationId, userId: UserId, };

/**
 * A user's conversations, newest first (the answer to [`UserConversationsQuery`], and the
 * ingress's).
 */
export type UserConversations = { 
/**
 * Newest first; empty for a user in none.
 */
conversations: Array<ConversationSummary>, };

/**
 * A user of the host application; also the routing key on `user.direct`.
 */
export type UserId = string;

/**
 * `user:offline`
 */
export type UserOffline = { userId: UserId, 
/**
 * When the user's last socket closed.
 */
lastSeenAt: string, };

/**
 * `user:online`
 */
export type UserOnline = { userId: UserId, 
/**
 * When the user's first socket connected.
 */
at: string, };

/**
 * One user's presence in a `presence:query` reply.
 */
export type UserPresence = { online: boolean, 
/**
 * When the user was last seen going offline; null if never.
 */
lastSeenAt: string | null, };

/** The acknowledgement of every client event: the reply's fields next to `success: true`, or the error. */
export type Ack<Reply> = ({ success: true } & Reply) | { success: false; error: AckError };

/** Every client event: its payload and its success reply. */
export interface ClientEvents {
  "message:send": { payload: MessageSend; reply: MessageSent };
  "message:read": { payload: MessageRead; reply: Empty };
  "conversation:join": { payload: ConversationRef; reply: Empty };
  "conversation:leave": { payload: ConversationRef; reply: Empty };
  "typing:start": { payload: ConversationRef; reply: Empty };
  "typing:stop": { payload: ConversationRef; reply: Empty };
  "messages:sync": { payload: MessagesSync; reply: MessagesPage };
  "presence:query": { payload: PresenceQuery; reply: PresenceReply };
  "notifications:list": { payload: NotificationsList; reply: NotificationsPage };
  "notification:read": { payload: NotificationRead; reply: Empty };
}

/** Every server event and its payload. */
export interface ServerEvents {
  "session": Session;
  "message:new": MessageNew;
  "message:read": MessageReadEvent;
  "user:online": UserOnline;
  "user:offline": UserOffline;
  "notification:new": NotificationNew;
  "match:new": MatchNew;
  "match:removed": MatchRemoved;
  "sync:required": SyncRequired;
  "typing:start": Typing;
  "typing:stop": Typing;
}

/** Client events for `socket.io-client`'s typed `Socket<ServerToClientEvents, ClientToServerEvents>`: every event takes an acknowledgement. */
export interface ClientToServerEvents {
  "message:send": (payload: MessageSend, ack: (reply: Ack<MessageSent>) => void) => void;
  "message:read": (payload: MessageRead, ack: (reply: Ack<Empty>) => void) => void;
  "conversation:join": (payload: ConversationRef, ack: (reply: Ack<Empty>) => void) => void;
  "conversation:leave": (payload: ConversationRef, ack: (reply: Ack<Empty>) => void) => void;
  "typing:start": (payload: ConversationRef, ack: (reply: Ack<Empty>) => void) => void;
  "typing:stop": (payload: ConversationRef, ack: (reply: Ack<Empty>) => void) => void;
  "messages:sync": (payload: MessagesSync, ack: (reply: Ack<MessagesPage>) => void) => void;
  "presence:query": (payload: PresenceQuery, ack: (reply: Ack<PresenceReply>) => void) => void;
  "notifications:list": (payload: NotificationsList, ack: (reply: Ack<NotificationsPage>) => void) => void;
  "notification:read": (payload: NotificationRead, ack: (reply: Ack<Empty>) => void) => void;
}

/** Server events for `socket.io-client`'s typed `Socket`. */
export interface ServerToClientEvents {
  "session": (payload: Session) => void;
  "message:new": (payload: MessageNew) => void;
  "message:read": (payload: MessageReadEvent) => void;
  "user:online": (payload: UserOnline) => void;
  "user:offline": (payload: UserOffline) => void;
  "notification:new": (payload: NotificationNew) => void;
  "match:new": (payload: MatchNew) => void;
  "match:removed": (payload: MatchRemoved) => void;
  "sync:required": (payload: SyncRequired) => void;
  "typing:start": (payload: Typing) => void;
  "typing:stop": (payload: Typing) => void;
}

/** The names of every client event, in the contract's order. */
export const clientEventNames = [
  "message:send",
  "message:read",
  "conversation:join",
  "conversation:leave",
  "typing:start",
  "typing:stop",
  "messages:sync",
  "presence:query",
  "notifications:list",
  "notification:read",
] as const satisfies readonly (keyof ClientEvents)[];

/** The names of every server event. */
export const serverEventNames = [
  "session",
  "message:new",
  "message:read",
  "user:online",
  "user:offline",
  "notification:new",
  "match:new",
  "match:removed",
  "sync:required",
  "typing:start",
  "typing:stop",
] as const satisfies readonly (keyof ServerEvents)[];
