// The server-side emitter for Node backends: the calls API routes of the system we replace
// made (emitToUser, emitToRoom), plus matches, conversations and notifications, a
// conversation's messages, presence, a user's conversations and ending a user's sockets, over
// the edge's HTTP ingress (docs/reference.md, Ingress; docs/openapi.json; `Authorization:
// Bearer <INGRESS_API_KEYS entry>`).
//
// Each call resolves once the edge has done what the contract promises for a success (the bus
// confirmed the message, or the conversation is stored) and rejects with an IngressError
// otherwise: InvalidRequestError (400: fix the request), UnauthorizedError (401: the key),
// NotFoundError (404: no such conversation), UnavailableError (5xx or no answer: safe to retry;
// matches are idempotent by matchId).
//
// The request bodies and the answers the generated contract has no type for follow the
// ingress's OpenAPI document (docs/openapi.json, from shared/src/contract/ingress.rs).

import type {
  ConversationId,
  ErrorCode,
  JsonValue,
  MatchId,
  MessagesPage,
  NotificationId,
  PresenceReply,
  ServerEvents,
  UserId,
} from "./generated/contract.js";

/** A room as the contract names them: every socket of a user, or those that joined a conversation. */
export type Room = `user:${UserId}` | `conversation:${ConversationId}`;

export interface EmitterOptions {
  /** The edge, e.g. `http://localhost:3001`. */
  url: string;
  /** One of the edge's INGRESS_API_KEYS. */
  apiKey: string;
  /** Longest wait for one request; default 10 s. */
  timeoutMs?: number;
  /** The fetch to use; default the global one (Node 18+). */
  fetch?: typeof fetch;
}

export interface Match {
  matchId: MatchId;
  userIds: [UserId, UserId];
  /** RFC 3339; default: when the notifier handles it. */
  createdAt?: string;
}

export interface Notification {
  userId: UserId;
  type: string;
  title: string;
  message: string;
  data?: JsonValue;
}

/** A page of a conversation's history: the messages with a `seq` greater than `afterSeq`. */
export interface MessagesPageOptions {
  /** 0 (the default) for the first page, else the last `seq` of the page before. */
  afterSeq?: number;
  /** At least 1; 50 when absent, more than 200 counts as 200. */
  limit?: number;
}

/** One conversation of a user (`GET /api/v1/users/{userId}/conversations`). */
export interface ConversationSummary {
  conversationId: ConversationId;
  /** Every participant, the user included, sorted. */
  participants: UserId[];
  /** The match it was made for; null for one made with createConversation. */
  matchId: MatchId | null;
  createdAt: string;
  /** When an unmatch closed it for good; null while it is open. */
  closedAt: string | null;
  /** The `seq` of its newest message; 0 before the first. */
  lastSeq: number;
}

/** Any failure of an ingress call. */
export class IngressError extends Error {
  constructor(
    message: string,
    /** The HTTP status, or 0 when no answer came. */
    readonly status: number,
    /** The contract's error code from the body, when there was one. */
    readonly code: ErrorCode | undefined,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** 400: the request breaks the contract's rules; retrying it unchanged fails again. */
export class InvalidRequestError extends IngressError {}
/** 401: the API key is missing or not one of the edge's INGRESS_API_KEYS. */
export class UnauthorizedError extends IngressError {}
/** 404: what the request names does not exist (a conversation's messages). */
export class NotFoundError extends IngressError {}
/** 5xx, or no answer in time: the bus or a worker is unavailable; safe to retry. */
export class UnavailableError extends IngressError {}

export class SwitchboardEmitter {
  private readonly base: string;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: EmitterOptions) {
    this.base = options.url.replace(/\/+$/, "");
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Emits an event to every socket of a user (typed for the server's own events). */
  emitToUser<E extends keyof ServerEvents>(userId: UserId, event: E, data: ServerEvents[E]): Promise<void>;
  emitToUser(userId: UserId, event: string, data?: unknown): Promise<void>;
  async emitToUser(userId: UserId, event: string, data?: unknown): Promise<void> {
    await this.request("POST", "/api/v1/emit", { userId, event, data: data ?? null });
  }

  /** Emits an event to a room: `user:<userId>` or `conversation:<conversationId>`. */
  emitToRoom<E extends keyof ServerEvents>(room: Room, event: E, data: ServerEvents[E]): Promise<void>;
  emitToRoom(room: Room, event: string, data?: unknown): Promise<void>;
  async emitToRoom(room: Room, event: string, data?: unknown): Promise<void> {
    await this.request("POST", "/api/v1/emit", { room, event, data: data ?? null });
  }

  /** A conversation between 2 to 100 users; resolves once it is stored. */
  async createConversation(participants: UserId[]): Promise<{ conversationId: ConversationId }> {
    return (await this.request("POST", "/api/v1/conversations", { participants })) as {
      conversationId: ConversationId;
    };
  }

  /**
   * A match: once per matchId, a conversation, a notification for each, and match:new to both.
   * Resolves with the match's conversation, the same for every call with the same matchId.
   */
  async publishMatch(match: Match): Promise<{ matchId: MatchId; conversationId: ConversationId }> {
    return (await this.request("POST", "/api/v1/matches", match)) as {
      matchId: MatchId;
      conversationId: ConversationId;
    };
  }

  /** The unmatch: closes the match's conversation; both users get match:removed. */
  async removeMatch(matchId: MatchId): Promise<void> {
    await this.request("DELETE", `/api/v1/matches/${encodeURIComponent(matchId)}`);
  }

  /** A notification, stored for the user and delivered as notification:new. */
  async notify(notification: Notification): Promise<{ id: NotificationId }> {
    return (await this.request("POST", "/api/v1/notifications", notification)) as { id: NotificationId };
  }

  /** A page of any conversation's messages, ascending by `seq`; closed conversations too. */
  async conversationMessages(conversationId: ConversationId, options: MessagesPageOptions = {}): Promise<MessagesPage> {
    const query = new URLSearchParams();
    if (options.afterSeq !== undefined) query.set("afterSeq", String(options.afterSeq));
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    const suffix = query.size > 0 ? `?${query}` : "";
    const path = `/api/v1/conversations/${encodeURIComponent(conversationId)}/messages${suffix}`;
    return (await this.request("GET", path)) as MessagesPage;
  }

  /** Whether each of 1 to 200 users is online, and when each was last seen going offline. */
  async presence(userIds: UserId[]): Promise<PresenceReply> {
    return (await this.request("POST", "/api/v1/presence/query", { userIds })) as PresenceReply;
  }

  /** Every conversation the user takes part in, open or closed, newest first. */
  async userConversations(userId: UserId): Promise<{ conversations: ConversationSummary[] }> {
    return (await this.request("GET", `/api/v1/users/${encodeURIComponent(userId)}/conversations`)) as {
      conversations: ConversationSummary[];
    };
  }

  /**
   * Ends every socket of the user on every edge (a logout everywhere, a ban). It does not stop
   * a new connection: delete the user's sessions first, and pass `revokeSessions: true` so that
   * no edge serves them from its cache.
   */
  async disconnectUser(userId: UserId, options: { revokeSessions?: boolean } = {}): Promise<void> {
    const suffix = options.revokeSessions ? "?revokeSessions=true" : "";
    await this.request("DELETE", `/api/v1/users/${encodeURIComponent(userId)}/sockets${suffix}`);
  }

  private async request(method: string, path: string, body?: unknown): Promise<unknown> {
    const timeoutMs = this.options.timeoutMs ?? 10_000;
    let response: Response;
    try {
      response = await this.fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.options.apiKey}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (cause) {
      throw new UnavailableError(`${method} ${path}: no answer from ${this.base} (${String(cause)})`, 0, undefined);
    }
    const text = await response.text();
    let parsed: unknown = undefined;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      // Not JSON (a proxy's error page, say): reported by status below.
    }
    if (response.ok) return parsed;
    const error = (parsed as { error?: { code?: ErrorCode; message?: string } } | undefined)?.error;
    const message = `${method} ${path}: ${response.status} ${error?.message ?? response.statusText}`;
    if (response.status === 400) throw new InvalidRequestError(message, 400, error?.code);
    if (response.status === 401) throw new UnauthorizedError(message, 401, error?.code);
    if (response.status === 404) throw new NotFoundError(message, 404, error?.code);
    if (response.status >= 500) throw new UnavailableError(message, response.status, error?.code);
    throw new IngressError(message, response.status, error?.code);
  }
}

/** An emitter for the edge at `options.url`. */
export function createEmitter(options: EmitterOptions): SwitchboardEmitter {
  return new SwitchboardEmitter(options);
}
