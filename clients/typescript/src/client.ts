// The client library: one Switchboard connection on the official socket.io-client, with the
// contract's events typed (src/generated/contract.ts) and the two things every chat client
// otherwise writes itself:
//
// - sendMessage retries an outcome-unknown failure with the same clientMessageId, which the
//   contract makes safe (the server stores the message once and answers the original id);
// - after a reconnect, every joined conversation is joined again (rooms belong to a socket) and
//   every conversation it knows is caught up with messages:sync from the last seq seen, so
//   listeners of message:new get what was sent while the network was down, once each and in seq
//   order. The same catch-up (without joining: the socket kept its rooms) runs on sync:required,
//   the edge's word that its deliveries were lost for a while, and for one conversation when a
//   gap in its seqs does not close within a grace period.

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
  /**
   * How long a gap in a conversation's seqs may stay open before the client fetches the missing
   * messages with messages:sync; default 1000 ms. Messages behind the gap wait meanwhile. The
   * wait is there because a gap is not always a loss: the ack of this socket's own message can
   * come before another user's earlier message reaches it.
   */
  gapGraceMs?: number;
  /**
   * How many conversations a catch-up (after a reconnect or sync:required) fetches at once;
   * default 4. A user with many conversations would otherwise send them all at once and meet
   * the edge's per-socket rate limit. Their live messages are held from the start either way.
   */
  catchUpConcurrency?: number;
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
  private readonly gapGraceMs: number;
  /** Bounds the conversations fetched at once by catch-ups (see catchUpConcurrency). */
  private readonly fetchPermits: Permits;
  /** The application's message:new listeners: fed by live events and by catch-up syncs. */
  private readonly messageListeners = new Set<(message: MessageNew) => void>();
  private readonly connectionListeners = new Set<(connected: boolean) => void>();
  /** Conversations joined through this client: joined again and caught up after a reconnect. */
  private readonly joined = new Set<ConversationId>();
  /**
   * What this client has seen of each conversation. Messages arrive for every conversation of
   * the user, joined or not, so this also names the conversations a catch-up covers.
   */
  private readonly seen = new Map<ConversationId, SeenSeqs>();
  /**
   * Live messages not handed to the listeners yet, so that they get each conversation in seq
   * order: those behind a gap, and all of a conversation's while it catches up.
   */
  private readonly held = new Map<ConversationId, MessageNew[]>();
  /**
   * Conversations catching up now. A second request while one runs (a reconnect, another
   * sync:required) sets `again`: what the running one fetched may predate the loss.
   */
  private readonly catchingUp = new Map<ConversationId, { join: boolean; again: boolean }>();
  /** A pending gap check per conversation: the gap is closed once `contiguous` reaches `upTo`. */
  private readonly gapChecks = new Map<ConversationId, { timer: ReturnType<typeof setTimeout>; upTo: number }>();
  private connectedBefore = false;

  constructor(options: ConnectOptions) {
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.sendAttempts = Math.max(1, options.sendAttempts ?? 4);
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.gapGraceMs = options.gapGraceMs ?? 1_000;
    this.fetchPermits = new Permits(Math.max(1, options.catchUpConcurrency ?? 4));
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
      if (reconnected) void this.catchUp(true);
    });
    this.socket.on("disconnect", () => {
      // The catch-up after the reconnect covers every gap; a check firing while offline could
      // only give up on it.
      for (const id of [...this.gapChecks.keys()]) this.cancelGapCheck(id);
      this.connectionChanged(false);
    });
    // The socket stayed connected and kept its rooms, but what was sent to it since `since` may
    // be lost. The application hears the event too (`on("sync:required", ...)`), to refresh
    // anything else it keeps, such as a notifications list.
    this.socket.on("sync:required", () => void this.catchUp(false));
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
        this.advanced(conversationId);
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
    if (options.afterSeq !== undefined) {
      this.seenOf(conversationId).start(options.afterSeq);
      this.advanced(conversationId);
    }
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
    // The caller has these now: held ones among them are dropped, later ones may be in order.
    this.advanced(conversationId);
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

  /**
   * A live message:new. Delivered at once when it is the next seq; held while its conversation
   * catches up, or while a message before it is missing. A gap is not always a loss (see
   * gapGraceMs), so it gets a grace period before a catch-up fetches what is missing.
   */
  private received(message: MessageNew): void {
    const id = message.conversationId;
    const seen = this.seenOf(id);
    if (seen.has(message.seq)) return;
    if (this.catchingUp.has(id) || !seen.isNext(message.seq)) {
      this.hold(message);
    } else {
      this.deliver(message);
      this.releaseInOrder(id);
    }
    this.watchGap(id);
  }

  /** Hands a message to the listeners unless it was seen already. */
  private deliver(message: MessageNew): void {
    if (!this.seenOf(message.conversationId).add(message.seq)) return;
    for (const listener of [...this.messageListeners]) listener(message);
  }

  private hold(message: MessageNew): void {
    const held = this.held.get(message.conversationId);
    if (held === undefined) this.held.set(message.conversationId, [message]);
    else held.push(message);
  }

  /** Delivers the held messages that are next in seq order now; drops those seen meanwhile. */
  private releaseInOrder(conversationId: ConversationId): void {
    const held = this.held.get(conversationId);
    if (held === undefined) return;
    const seen = this.seenOf(conversationId);
    held.sort((a, b) => a.seq - b.seq);
    while (held.length > 0) {
      const first = held[0]!;
      if (!seen.has(first.seq) && !seen.isNext(first.seq)) break;
      held.shift();
      this.deliver(first);
    }
    if (held.length === 0) this.held.delete(conversationId);
  }

  /** After a catch-up: delivers every held message in seq order, even past a gap it could not fill. */
  private releaseAll(conversationId: ConversationId): void {
    const held = this.held.get(conversationId);
    if (held === undefined) return;
    this.held.delete(conversationId);
    for (const message of held.sort((a, b) => a.seq - b.seq)) this.deliver(message);
  }

  /** Something other than a live message moved a conversation on (own ack, `afterSeq`, sync). */
  private advanced(conversationId: ConversationId): void {
    this.releaseInOrder(conversationId);
    this.watchGap(conversationId);
  }

  /**
   * The highest seq known of a conversation, seen or held, when a message below it is missing.
   * Own acks count: if another user's earlier message never comes, it is missing all the same.
   */
  private gapBelow(conversationId: ConversationId): number | undefined {
    const seen = this.seen.get(conversationId);
    if (seen?.contiguous === undefined) return undefined;
    const highest = Math.max(seen.gapBelow() ?? 0, ...(this.held.get(conversationId) ?? []).map((m) => m.seq));
    return highest > seen.contiguous ? highest : undefined;
  }

  /**
   * Starts the grace period of a gap, if there is one and nothing watches it yet. When it ends,
   * the conversation catches up (without joining) unless everything up to the seq that showed the
   * gap has come; a gap that opened later gets a grace period of its own.
   */
  private watchGap(conversationId: ConversationId): void {
    if (!this.socket.connected || this.catchingUp.has(conversationId) || this.gapChecks.has(conversationId)) return;
    const upTo = this.gapBelow(conversationId);
    if (upTo === undefined) return;
    const timer = setTimeout(() => {
      this.gapChecks.delete(conversationId);
      this.releaseInOrder(conversationId);
      const contiguous = this.seen.get(conversationId)?.contiguous;
      if (contiguous !== undefined && contiguous < upTo) void this.catchUpOne(conversationId, false);
      else this.watchGap(conversationId);
    }, this.gapGraceMs);
    this.gapChecks.set(conversationId, { timer, upTo });
  }

  private cancelGapCheck(conversationId: ConversationId): void {
    clearTimeout(this.gapChecks.get(conversationId)?.timer);
    this.gapChecks.delete(conversationId);
  }

  /**
   * Catches up every conversation this client knows: the joined ones, and those it has seen
   * messages of without joining (message:new comes for all of the user's conversations). After a
   * reconnect the joined ones are joined again first: rooms belong to the old socket. After
   * sync:required they are not: the socket kept its rooms.
   */
  private async catchUp(reconnected: boolean): Promise<void> {
    const ids = new Set(this.joined);
    // Without a starting point there is nothing to catch up from (only own messages were seen).
    for (const [id, seen] of this.seen) if (seen.contiguous !== undefined) ids.add(id);
    await Promise.all([...ids].map((id) => this.catchUpOne(id, reconnected && this.joined.has(id))));
  }

  /**
   * Fetches what one conversation missed, from the last contiguous seq, holding its live
   * messages meanwhile and delivering them after, so the listeners get seq order.
   */
  private async catchUpOne(conversationId: ConversationId, join: boolean): Promise<void> {
    const running = this.catchingUp.get(conversationId);
    if (running !== undefined) {
      running.again = true;
      running.join ||= join;
      return;
    }
    const state = { join, again: false };
    this.catchingUp.set(conversationId, state);
    this.cancelGapCheck(conversationId);
    try {
      do {
        const joinNow = state.join;
        state.join = state.again = false;
        for (let attempt = 1; this.socket.connected && this.knows(conversationId); attempt++) {
          const release = await this.fetchPermits.acquire();
          let outcome: "done" | "retry" | "forbidden";
          try {
            outcome = await this.fetchMissed(conversationId, joinNow);
          } finally {
            release();
          }
          // Forbidden: the conversation was closed (an unmatch) while we were away.
          if (outcome === "forbidden") this.forget(conversationId);
          if (outcome !== "retry" || attempt >= this.sendAttempts) break;
          await sleep(this.retryDelayMs * 2 ** (attempt - 1));
        }
      } while (state.again && this.socket.connected);
    } finally {
      this.catchingUp.delete(conversationId);
      // Offline, messages past the gap stay held: the catch-up after the reconnect fills the gap
      // and releases them in order. Connected, this was the last try: deliver what we have.
      if (this.socket.connected) this.releaseAll(conversationId);
      else this.releaseInOrder(conversationId);
    }
  }

  private async fetchMissed(conversationId: ConversationId, join: boolean): Promise<"done" | "retry" | "forbidden"> {
    if (join && this.joined.has(conversationId)) {
      const joined = await this.emit("conversation:join", { conversationId });
      if (!joined.success) return joined.error.code === "forbidden" ? "forbidden" : "retry";
    }
    let after = this.seen.get(conversationId)?.contiguous ?? 0;
    for (;;) {
      const page = await this.emit("messages:sync", { conversationId, afterSeq: after });
      if (!page.success) return page.error.code === "forbidden" ? "forbidden" : "retry";
      for (const message of page.messages) {
        this.deliver(message);
        after = message.seq;
      }
      // Held live messages that are next now need not wait for the last page.
      this.releaseInOrder(conversationId);
      if (!page.hasMore || page.messages.length === 0) return "done";
    }
  }

  /** Whether a catch-up still concerns this conversation (it was not forgotten meanwhile). */
  private knows(conversationId: ConversationId): boolean {
    return this.joined.has(conversationId) || this.seen.has(conversationId);
  }

  /**
   * Stops catching up a conversation the server refuses: it was closed. What was held came from
   * the server before that, so it is delivered first (delivering records seqs, which would
   * otherwise bring the conversation back).
   */
  private forget(conversationId: ConversationId): void {
    this.releaseAll(conversationId);
    this.joined.delete(conversationId);
    this.seen.delete(conversationId);
    this.cancelGapCheck(conversationId);
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

  /** Whether `seq` can be delivered now: nothing before it is missing (or no start is known). */
  isNext(seq: number): boolean {
    return this.contiguous === undefined || seq === this.contiguous + 1;
  }

  /** The highest seq seen, if a gap below it is still open. */
  gapBelow(): number | undefined {
    return this.above.size === 0 ? undefined : Math.max(...this.above);
  }

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

  has(seq: number): boolean {
    return (this.contiguous !== undefined && seq <= this.contiguous) || this.above.has(seq);
  }

  private advance(): void {
    if (this.contiguous === undefined) return;
    while (this.above.delete(this.contiguous + 1)) this.contiguous++;
    for (const seq of this.above) if (seq <= this.contiguous) this.above.delete(seq);
  }
}

/** A counting semaphore: at most `count` holders at once, the others wait in arrival order. */
class Permits {
  private readonly waiting: Array<() => void> = [];

  constructor(private free: number) {}

  /** Resolves with the function that gives the permit back. */
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
