// The client library: one Switchboard connection on the official socket.io-client, with the
// contract's events typed (src/generated/contract.ts) and the two things every chat client
// otherwise writes itself:
//
// - sendMessage retries an outcome-unknown failure with the same clientMessageId, which the
//   contract makes safe (the server stores the message once and answers the original id);
// - after a reconnect, every joined conversation is joined again (rooms belong to a socket) and
//   caught up with messages:sync from the last seq seen, so listeners of message:new get what
//   was sent while the network was down, once each and in seq order.

import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";

import type {
  Ack,
  AckError,
  ClientEvents,
  ClientToServerEvents,
  ConversationId,
  Empty,
  MessageId,
  MessageNew,
  MessageSent,
  NotificationId,
  NotificationsList,
  NotificationsPage,
  PresenceReply,
  ServerEvents,
  ServerToClientEvents,
  UserId,
} from "./generated/contract.js";

export type SwitchboardSocket = Socket<ServerToClientEvents, ClientToServerEvents>;
export type ClientEventName = keyof ClientEvents;
export type ServerEventName = keyof ServerEvents;
/** The acknowledgement of a client event. */
export type Reply<E extends ClientEventName> = Ack<ClientEvents[E]["reply"]>;
/** What sendMessage resolves to: the ack, and the clientMessageId every attempt carried. */
export type SendResult = Ack<MessageSent> & { clientMessageId: string };

export interface ConnectOptions {
  /** The edge, e.g. `http://localhost:3001`. */
  url: string;
  /** A session token, sent as `auth: { token }`. Leave it out to be authenticated by cookie. */
  token?: string;
  /** Send the browser's cookies with the handshake (cookie sessions); default: when no token. */
  withCredentials?: boolean;
  /** Connect at once (default) or on `connect()`. */
  autoConnect?: boolean;
  /**
   * How long to wait for an acknowledgement before answering `timeout` ourselves: the outcome
   * is then unknown, as with the server's own `timeout`. Default 10 s, above the edge's
   * ACK_TIMEOUT_MS (5 s) so the server's answer normally comes first.
   */
  ackTimeoutMs?: number;
  /** How many times sendMessage tries in all before giving up on `timeout`/`unavailable`; default 4. */
  sendAttempts?: number;
  /** The wait before the first retry, doubled for each further one; default 250 ms. */
  retryDelayMs?: number;
  /** Any other socket.io-client option (transports, reconnection delays, ...). */
  socket?: Partial<ManagerOptions & SocketOptions>;
}

/** Failures whose outcome is unknown or temporary: a retry with the same clientMessageId is safe. */
const RETRYABLE: ReadonlySet<AckError["code"]> = new Set(["timeout", "unavailable"]);

/** Opens a connection to a Switchboard edge. */
export function connect(options: ConnectOptions): SwitchboardClient {
  return new SwitchboardClient(options);
}

/**
 * A new clientMessageId. Built from getRandomValues, which browsers also offer outside secure
 * contexts (unlike crypto.randomUUID), so a page served over plain http on a LAN works too.
 */
export function newClientMessageId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The implementation signature of the overloads below: payloads are typed at the call site.
type Listener = (...args: any[]) => void;

export class SwitchboardClient {
  /** The underlying socket, typed with the contract's events. */
  readonly socket: SwitchboardSocket;
  private readonly ackTimeoutMs: number;
  private readonly sendAttempts: number;
  private readonly retryDelayMs: number;
  /** The application's message:new listeners: fed by live events and by catch-up syncs. */
  private readonly messageListeners = new Set<(message: MessageNew) => void>();
  private readonly connectionListeners = new Set<(connected: boolean) => void>();
  /** Conversations joined through this client: joined again and caught up after a reconnect. */
  private readonly joined = new Set<ConversationId>();
  /** What this client has seen of each conversation (messages also arrive without joining). */
  private readonly seen = new Map<ConversationId, SeenSeqs>();
  /** Live messages held back while their conversation catches up, so order is kept. */
  private readonly catchingUp = new Map<ConversationId, MessageNew[]>();
  private connectedBefore = false;

  constructor(options: ConnectOptions) {
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.sendAttempts = Math.max(1, options.sendAttempts ?? 4);
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.socket = io(options.url, {
      ...options.socket,
      autoConnect: options.autoConnect ?? true,
      withCredentials: options.withCredentials ?? options.token === undefined,
      ...(options.token === undefined ? {} : { auth: { token: options.token } }),
    });
    this.socket.on("message:new", (message) => this.received(message));
    this.socket.on("connect", () => {
      const reconnected = this.connectedBefore;
      this.connectedBefore = true;
      this.connectionChanged(true);
      if (reconnected) void this.catchUp();
    });
    this.socket.on("disconnect", () => this.connectionChanged(false));
  }

  get connected(): boolean {
    return this.socket.connected;
  }

  /** Connects (again) after `autoConnect: false` or `close()`. */
  connect(): void {
    this.socket.connect();
  }

  /** Closes the connection; `connect()` opens it again. */
  close(): void {
    this.socket.disconnect();
  }

  /** Calls `listener` with `true` on every (re)connection and `false` on every loss. */
  onConnectionChange(listener: (connected: boolean) => void): () => void {
    this.connectionListeners.add(listener);
    return () => this.connectionListeners.delete(listener);
  }

  /**
   * Listens to a server event (typed), or to any event a backend emits (`emitToUser`). Returns
   * the function that removes the listener.
   */
  on<E extends ServerEventName>(event: E, listener: (payload: ServerEvents[E]) => void): () => void;
  on(event: string, listener: (...args: unknown[]) => void): () => void;
  on(event: string, listener: Listener): () => void {
    if (event === "message:new") {
      this.messageListeners.add(listener as (message: MessageNew) => void);
    } else {
      this.untyped().on(event, listener);
    }
    return () => this.off(event, listener);
  }

  off<E extends ServerEventName>(event: E, listener: (payload: ServerEvents[E]) => void): void;
  off(event: string, listener: (...args: unknown[]) => void): void;
  off(event: string, listener: Listener): void {
    if (event === "message:new") {
      this.messageListeners.delete(listener as (message: MessageNew) => void);
    } else {
      this.untyped().off(event, listener);
    }
  }

  /** How many listeners `event` has (message:new counts the application's only). */
  listenerCount(event: string): number {
    if (event === "message:new") return this.messageListeners.size;
    return this.untyped().listeners(event).length;
  }

  /**
   * Emits a client event and resolves to its acknowledgement; never rejects. No answer within
   * `ackTimeoutMs` resolves to a `timeout` failure: the outcome is unknown.
   */
  async emit<E extends ClientEventName>(event: E, payload: ClientEvents[E]["payload"]): Promise<Reply<E>> {
    try {
      const socket = this.untyped().timeout(this.ackTimeoutMs);
      return (await socket.emitWithAck(event, payload)) as Reply<E>;
    } catch {
      return {
        success: false,
        error: { code: "timeout", message: `no acknowledgement within ${this.ackTimeoutMs} ms; the outcome is unknown` },
      };
    }
  }

  /**
   * Sends a message. On `timeout` or `unavailable` it tries again, with backoff and the same
   * clientMessageId, so the message is stored at most once however many attempts it takes.
   */
  async sendMessage(
    conversationId: ConversationId,
    content: string,
    options: { clientMessageId?: string } = {},
  ): Promise<SendResult> {
    const clientMessageId = options.clientMessageId ?? newClientMessageId();
    for (let attempt = 1; ; attempt++) {
      const reply = await this.emit("message:send", { conversationId, content, clientMessageId });
      if (reply.success) {
        // Our own messages never come back as message:new to this socket: count them as seen so
        // a catch-up does not hand them to the listeners.
        this.seenOf(conversationId).addOwn(reply.seq);
        return { ...reply, clientMessageId };
      }
      if (!RETRYABLE.has(reply.error.code) || attempt >= this.sendAttempts) {
        return { ...reply, clientMessageId };
      }
      await sleep(this.retryDelayMs * 2 ** (attempt - 1));
    }
  }

  /**
   * Joins a conversation (needed for typing events) and keeps it joined across reconnects,
   * catching up on what was missed. `afterSeq` is the last message the application already has
   * (from `sync`); without it, the client counts from the first message it sees.
   */
  async joinConversation(conversationId: ConversationId, options: { afterSeq?: number } = {}): Promise<Ack<Empty>> {
    // Counted as joined before the answer: messages may arrive right behind it, and a reconnect
    // meanwhile must join it again.
    const wasJoined = this.joined.has(conversationId);
    this.joined.add(conversationId);
    if (options.afterSeq !== undefined) this.seenOf(conversationId).start(options.afterSeq);
    const reply = await this.emit("conversation:join", { conversationId });
    if (!reply.success && !wasJoined) this.joined.delete(conversationId);
    return reply;
  }

  async leaveConversation(conversationId: ConversationId): Promise<Ack<Empty>> {
    this.joined.delete(conversationId);
    return this.emit("conversation:leave", { conversationId });
  }

  /** Tells the other participants this user started or stopped typing (joined conversations only). */
  typing(conversationId: ConversationId, isTyping: boolean): Promise<Ack<Empty>> {
    return this.emit(isTyping ? "typing:start" : "typing:stop", { conversationId });
  }

  /** Who of `userIds` is online; only users sharing a conversation with this one are answered. */
  presence(userIds: UserId[]): Promise<Ack<PresenceReply>> {
    return this.emit("presence:query", { userIds });
  }

  markRead(conversationId: ConversationId, messageId: MessageId): Promise<Ack<Empty>> {
    return this.emit("message:read", { conversationId, messageId });
  }

  notifications(options: NotificationsList = {}): Promise<Ack<NotificationsPage>> {
    return this.emit("notifications:list", options);
  }

  markNotificationRead(id: NotificationId): Promise<Ack<Empty>> {
    return this.emit("notification:read", { id });
  }

  /**
   * Every message after `afterSeq`, ascending, fetched page by page while the server says there
   * are more. Marks them seen, so a later catch-up does not deliver them again.
   */
  async sync(conversationId: ConversationId, afterSeq = 0): Promise<Ack<{ messages: MessageNew[] }>> {
    const messages: MessageNew[] = [];
    let after = afterSeq;
    for (;;) {
      const page = await this.emit("messages:sync", { conversationId, afterSeq: after });
      if (!page.success) return page;
      messages.push(...page.messages);
      const last = page.messages.at(-1);
      if (!page.hasMore || last === undefined) break;
      after = last.seq;
    }
    const seen = this.seenOf(conversationId);
    seen.start(afterSeq);
    for (const message of messages) seen.add(message.seq);
    return { success: true, messages };
  }

  /** The seq up to which this client has seen every message of a conversation. */
  lastSeq(conversationId: ConversationId): number | undefined {
    return this.seen.get(conversationId)?.contiguous;
  }

  /** Whether a reconnect will join this conversation again and catch it up. */
  isJoined(conversationId: ConversationId): boolean {
    return this.joined.has(conversationId);
  }

  private seenOf(conversationId: ConversationId): SeenSeqs {
    let seen = this.seen.get(conversationId);
    if (seen === undefined) this.seen.set(conversationId, (seen = new SeenSeqs()));
    return seen;
  }

  private received(message: MessageNew): void {
    const held = this.catchingUp.get(message.conversationId);
    if (held) {
      held.push(message);
      return;
    }
    this.deliver(message);
  }

  /** Hands a message to the listeners unless it was seen already. */
  private deliver(message: MessageNew): void {
    if (!this.seenOf(message.conversationId).add(message.seq)) return;
    for (const listener of [...this.messageListeners]) listener(message);
  }

  /** After a reconnect: join every joined conversation again and fetch what was missed. */
  private async catchUp(): Promise<void> {
    await Promise.all([...this.joined].map((id) => this.catchUpOne(id)));
  }

  private async catchUpOne(conversationId: ConversationId): Promise<void> {
    if (this.catchingUp.has(conversationId)) return;
    this.catchingUp.set(conversationId, []);
    try {
      for (let attempt = 1; this.socket.connected && this.joined.has(conversationId); attempt++) {
        const outcome = await this.fetchMissed(conversationId);
        // Forbidden: the conversation was closed (an unmatch) while we were away.
        if (outcome === "forbidden") this.joined.delete(conversationId);
        if (outcome !== "retry" || attempt >= this.sendAttempts) break;
        await sleep(this.retryDelayMs * 2 ** (attempt - 1));
      }
    } finally {
      const held = this.catchingUp.get(conversationId) ?? [];
      this.catchingUp.delete(conversationId);
      for (const message of held.sort((a, b) => a.seq - b.seq)) this.deliver(message);
    }
  }

  private async fetchMissed(conversationId: ConversationId): Promise<"done" | "retry" | "forbidden"> {
    const joined = await this.emit("conversation:join", { conversationId });
    if (!joined.success) return joined.error.code === "forbidden" ? "forbidden" : "retry";
    let after = this.seen.get(conversationId)?.contiguous ?? 0;
    for (;;) {
      const page = await this.emit("messages:sync", { conversationId, afterSeq: after });
      if (!page.success) return page.error.code === "forbidden" ? "forbidden" : "retry";
      for (const message of page.messages) {
        this.deliver(message);
        after = message.seq;
      }
      if (!page.hasMore || page.messages.length === 0) return "done";
    }
  }

  private connectionChanged(connected: boolean): void {
    for (const listener of [...this.connectionListeners]) listener(connected);
  }

  /** The socket without the contract's typing, for events only known at run time. */
  private untyped(): Socket {
    return this.socket as unknown as Socket;
  }
}

/**
 * The seqs of one conversation this client has seen. `contiguous` is the seq up to which it has
 * seen every message (where a catch-up starts); seqs above it are kept until the gap closes.
 * Seen-ness is per seq, not a high-water mark, because this socket's own messages (known from
 * their acks) can be ahead of another user's message still on its way.
 */
class SeenSeqs {
  contiguous: number | undefined;
  private readonly above = new Set<number>();

  /** Sets the starting point if none is known yet. */
  start(afterSeq: number): void {
    if (this.contiguous === undefined) this.contiguous = afterSeq;
    this.advance();
  }

  /** Records the seq of a message from the server; false if it was seen already. */
  add(seq: number): boolean {
    if (this.has(seq)) return false;
    // The first message seen sets the starting point, unless the application gave one.
    if (this.contiguous === undefined) this.contiguous = seq - 1;
    this.above.add(seq);
    this.advance();
    return true;
  }

  /**
   * Records the seq of a message this socket sent. It never arrives here as message:new, so it
   * does not set the starting point: another user's earlier message may still be on its way.
   */
  addOwn(seq: number): void {
    if (this.has(seq)) return;
    this.above.add(seq);
    this.advance();
  }

  private has(seq: number): boolean {
    return (this.contiguous !== undefined && seq <= this.contiguous) || this.above.has(seq);
  }

  private advance(): void {
    if (this.contiguous === undefined) return;
    while (this.above.delete(this.contiguous + 1)) this.contiguous++;
    for (const seq of this.above) if (seq <= this.contiguous) this.above.delete(seq);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
