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
// Every request body, query and answer is a type generated from the ingress's Rust types
// (shared/src/contract/ingress.rs), the ones the edge parses and answers with and the OpenAPI
// document (docs/openapi.json) is derived from; the names below are the kit's for them.

import type {
  Accepted,
  ConversationCreatedReply,
  ConversationId,
  ConversationSummary,
  CreateConversationRequest,
  DisconnectParams,
  EmitRequest,
  ErrorBody,
  ErrorCode,
  JsonValue,
  MatchAccepted,
  MatchId,
  MatchRequest,
  MessagesPage,
  MessagesParams,
  NotificationAccepted,
  NotificationRequest,
  PresenceReply,
  PresenceRequest,
  Room,
  ServerEvents,
  UserConversations,
  UserId,
} from "./generated/contract.js";

// Under the same names as in the contract, with its comments.
export type { ConversationSummary, Room };

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

/** A match for publishMatch: the body of `POST /api/v1/matches`. */
export type Match = MatchRequest;

/** A notification for notify: the body of `POST /api/v1/notifications`. */
export type Notification = NotificationRequest;

/** A page of a conversation's history: the messages with a `seq` greater than `afterSeq`. */
export type MessagesPageOptions = MessagesParams;

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
    const body: EmitRequest = { userId, event, data: payload(data) };
    await this.request<Accepted>("POST", "/api/v1/emit", body);
  }

  /** Emits an event to a room: `user:<userId>` or `conversation:<conversationId>`. */
  emitToRoom<E extends keyof ServerEvents>(room: Room, event: E, data: ServerEvents[E]): Promise<void>;
  emitToRoom(room: Room, event: string, data?: unknown): Promise<void>;
  async emitToRoom(room: Room, event: string, data?: unknown): Promise<void> {
    const body: EmitRequest = { room, event, data: payload(data) };
    await this.request<Accepted>("POST", "/api/v1/emit", body);
  }

  /** A conversation between 2 to 100 users; resolves once it is stored. */
  async createConversation(participants: UserId[]): Promise<ConversationCreatedReply> {
    const body: CreateConversationRequest = { participants };
    return this.request("POST", "/api/v1/conversations", body);
  }

  /**
   * A match: once per matchId, a conversation, a notification for each, and match:new to both.
   * Resolves with the match's conversation, the same for every call with the same matchId.
   */
  async publishMatch(match: Match): Promise<MatchAccepted> {
    return this.request("POST", "/api/v1/matches", match);
  }

  /** The unmatch: closes the match's conversation; both users get match:removed. */
  async removeMatch(matchId: MatchId): Promise<void> {
    await this.request<Accepted>("DELETE", `/api/v1/matches/${encodeURIComponent(matchId)}`);
  }

  /** A notification, stored for the user and delivered as notification:new. */
  async notify(notification: Notification): Promise<NotificationAccepted> {
    return this.request("POST", "/api/v1/notifications", notification);
  }

  /** A page of any conversation's messages, ascending by `seq`; closed conversations too. */
  async conversationMessages(conversationId: ConversationId, options: MessagesPageOptions = {}): Promise<MessagesPage> {
    const path = `/api/v1/conversations/${encodeURIComponent(conversationId)}/messages${query(options)}`;
    return this.request("GET", path);
  }

  /** Whether each of 1 to 200 users is online, and when each was last seen going offline. */
  async presence(userIds: UserId[]): Promise<PresenceReply> {
    const body: PresenceRequest = { userIds };
    return this.request("POST", "/api/v1/presence/query", body);
  }

  /** Every conversation the user takes part in, open or closed, newest first. */
  async userConversations(userId: UserId): Promise<UserConversations> {
    return this.request("GET", `/api/v1/users/${encodeURIComponent(userId)}/conversations`);
  }

  /**
   * Ends every socket of the user on every edge (a logout everywhere, a ban). It does not stop
   * a new connection: delete the user's sessions first, and pass `revokeSessions: true` so that
   * no edge serves them from its cache.
   */
  async disconnectUser(userId: UserId, options: DisconnectParams = {}): Promise<void> {
    // false is the default: left out of the query.
    const suffix = query({ revokeSessions: options.revokeSessions || undefined });
    await this.request<Accepted>("DELETE", `/api/v1/users/${encodeURIComponent(userId)}/sockets${suffix}`);
  }

  /**
   * Sends one request and resolves with its answer, typed as the route's success answer: the
   * edge answers with the contract's type, so the answer is not checked again here.
   */
  private async request<Answer>(method: string, path: string, body?: object): Promise<Answer> {
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
    if (response.ok) return parsed as Answer;
    const error = (parsed as Partial<ErrorBody> | undefined)?.error;
    const message = `${method} ${path}: ${response.status} ${error?.message ?? response.statusText}`;
    // ErrorBody's code is a string: the contract's codes and the ones only HTTP has
    // ("unauthorized", "too_large", ...); IngressError has always typed it as ErrorCode.
    const code = error?.code as ErrorCode | undefined;
    if (response.status === 400) throw new InvalidRequestError(message, 400, code);
    if (response.status === 401) throw new UnauthorizedError(message, 401, code);
    if (response.status === 404) throw new NotFoundError(message, 404, code);
    if (response.status >= 500) throw new UnavailableError(message, response.status, code);
    throw new IngressError(message, response.status, code);
  }
}

/**
 * An event's payload as the emit body carries it: absent becomes `null`. Typed overloads take
 * the contract's payloads; the untyped ones anything `JSON.stringify` writes as is.
 */
function payload(data: unknown): JsonValue {
  return (data ?? null) as JsonValue;
}

/** `?name=value&...` of the query parameters that are set, or nothing when none is. */
function query(params: { [name: string]: number | boolean | undefined }): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined) search.set(name, String(value));
  }
  return search.size > 0 ? `?${search}` : "";
}

/** An emitter for the edge at `options.url`. */
export function createEmitter(options: EmitterOptions): SwitchboardEmitter {
  return new SwitchboardEmitter(options);
}
