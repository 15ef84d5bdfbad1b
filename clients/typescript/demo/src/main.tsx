// The demo: two users, alice and bob, side by side (stacked on a narrow screen), each with their
// own socket. Press "Match" and the demo server publishes a new match between them; both get a
// notification and the conversation, see each other online, and can chat (with typing
// indicators, times and read marks). "Unmatch" closes the conversation; pressing "Match" again
// makes a new match. Everything goes through the kit: SwitchboardProvider and useWebSocket here,
// the server emitter in serve.mjs.
//
// A matchId is single-use: the server answers 202 for a removed one and never revives it. So the
// demo server makes a fresh matchId per press, and a re-match is a new match with a new
// conversation. A pane shows the newest of its matches whose conversation is still open.

import { StrictMode, useEffect, useRef, useState, type FormEvent } from "react";
import { createRoot } from "react-dom/client";

import type {
  ConversationId,
  MatchNotificationData,
  MessageId,
  MessageNew,
  NotificationNew,
} from "../../src/index.js";
import { SwitchboardProvider, useWebSocket } from "../../src/react.js";

interface DemoConfig {
  edgeUrl: string;
  users: Array<{ id: string; token: string }>;
}

/** A stored message as a pane shows it. */
type Line = Pick<MessageNew, "id" | "conversationId" | "seq" | "senderId" | "content" | "createdAt">;

/** A match of this pane's user with the other one, learnt from match:new or a match notification. */
interface Match {
  matchId: string;
  conversationId: ConversationId;
  /** When it was made (ms since the epoch): the newest open match is the one shown. */
  at: number;
}

/**
 * A message this pane sent that has no stored copy yet: on its way, or refused. A refused one
 * stays in the list with the server's reason, so no message ever vanishes silently.
 */
interface Outgoing {
  key: number;
  conversationId: ConversationId;
  content: string;
  error?: string;
}

/** Adds lines to a list without duplicates (a message can come live and from a sync), in seq order. */
function merge(list: Line[], more: Line[]): Line[] {
  const byId = new Map(list.map((line) => [line.id, line]));
  for (const line of more) byId.set(line.id, line);
  return [...byId.values()].sort((a, b) => a.seq - b.seq);
}

/** The match a notification of type `match` announces. */
function matchDataOf(notification: NotificationNew): MatchNotificationData | undefined {
  return notification.type === "match" ? (notification.data as MatchNotificationData | undefined) : undefined;
}

/** The match with `other` a notification announces, if it is one. */
function matchWith(other: string, notification: NotificationNew): Match | undefined {
  const data = matchDataOf(notification);
  if (data?.otherUserId !== other) return undefined;
  return { matchId: data.matchId, conversationId: data.conversationId, at: Date.parse(notification.timestamp) };
}

/** Adds matches (each matchId once: it comes as match:new and as a notification), newest first. */
function addMatches(list: Match[], more: Match[]): Match[] {
  const byId = new Map(list.map((match) => [match.matchId, match]));
  for (const match of more) if (!byId.has(match.matchId)) byId.set(match.matchId, match);
  return [...byId.values()].sort((a, b) => b.at - a.at);
}

/**
 * Notifications newest first, one per match: a match's notification can arrive both live and in
 * the inbox list fetched on connect, and each match has one strip, whatever else is duplicated.
 */
function notificationsList(list: NotificationNew[]): NotificationNew[] {
  const seen = new Set<string>();
  return [...list]
    .sort((a, b) => Date.parse(b.timestamp) - Date.parse(a.timestamp))
    .filter((notification) => {
      const matchId = matchDataOf(notification)?.matchId;
      const key = matchId === undefined ? `id:${notification.id}` : `match:${matchId}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
}

/** `set` with `item` added (the same set when it is already there, so React skips a render). */
function withItem<T>(set: ReadonlySet<T>, item: T): ReadonlySet<T> {
  return set.has(item) ? set : new Set(set).add(item);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** A message's time, in the browser's local time zone. */
function Time({ iso }: { iso: string }) {
  const date = new Date(iso);
  return (
    <time dateTime={iso} title={date.toLocaleString()}>
      {timeFormat.format(date)}
    </time>
  );
}

/** How long after the last keystroke typing counts as stopped. */
const TYPING_IDLE_MS = 3000;

function Pane({ me, other }: { me: string; other: string }) {
  const ws = useWebSocket();
  const { on, isConnected } = ws;
  const [matches, setMatches] = useState<Match[]>([]);
  /** Conversations known to be closed: by match:removed, or because the server said forbidden. */
  const [closed, setClosed] = useState<ReadonlySet<ConversationId>>(new Set());
  /** The conversation whose history is loaded and which is joined: only then can one write. */
  const [opened, setOpened] = useState<ConversationId>();
  const [lines, setLines] = useState<Line[]>([]);
  const [outgoing, setOutgoing] = useState<Outgoing[]>([]);
  /** Messages the other user reported read (message:read). */
  const [readByOther, setReadByOther] = useState<ReadonlySet<MessageId>>(new Set());
  const [otherOnline, setOtherOnline] = useState<boolean>();
  const [otherTyping, setOtherTyping] = useState(false);
  const [notifications, setNotifications] = useState<NotificationNew[]>([]);
  const [error, setError] = useState("");
  const [draft, setDraft] = useState("");
  const typingTimer = useRef<ReturnType<typeof setTimeout>>(undefined);
  const reportedRead = useRef<MessageId>(undefined);
  const nextKey = useRef(0);

  // The conversation shown: the newest match's that is still open. Derived rather than stored,
  // so an unmatch of another match changes nothing here, and a closed one gives way by itself.
  const current = matches.find((match) => !closed.has(match.conversationId));
  const conversationId = current?.conversationId;
  const ready = current !== undefined && opened === current.conversationId;
  const shown = lines.filter((line) => line.conversationId === conversationId);
  const shownOutgoing = outgoing.filter((out) => out.conversationId === conversationId);

  // Events. The hook would remove these listeners on unmount anyway; removing them when the
  // effect is cleaned up also keeps React's development double-run from adding them twice.
  useEffect(() => {
    const offs = [
      on("match:new", (match) => {
        if (match.userId !== other) return;
        const { matchId, conversationId } = match;
        setMatches((list) => addMatches(list, [{ matchId, conversationId, at: Date.parse(match.createdAt) }]));
      }),
      on("notification:new", (notification) => {
        setNotifications((list) => notificationsList([notification, ...list]));
        const match = matchWith(other, notification);
        if (match) setMatches((list) => addMatches(list, [match]));
      }),
      // Only that match's conversation closes; if it was the one shown, the pane moves on to
      // the next open match, or to none.
      on("match:removed", (removed) => setClosed((set) => withItem(set, removed.conversationId))),
      on("message:new", (message) => setLines((list) => merge(list, [message]))),
      on("message:read", (read) => {
        if (read.userId === other) setReadByOther((set) => withItem(set, read.messageId));
      }),
      on("user:online", (event) => event.userId === other && setOtherOnline(true)),
      on("user:offline", (event) => event.userId === other && setOtherOnline(false)),
      on("typing:start", (event) => event.userId === other && setOtherTyping(true)),
      on("typing:stop", (event) => event.userId === other && setOtherTyping(false)),
    ];
    return () => offs.forEach((off) => off());
  }, [on, other]);

  // After each (re)connection: the inbox, where earlier matches are found again after a reload.
  // It does not say which of them were removed since: opening one answers that (see below).
  useEffect(() => {
    if (!isConnected) return;
    void ws.client.notifications({ limit: 50 }).then((reply) => {
      if (!reply.success) return setError(`Loading the notifications failed: ${reply.error.message}`);
      setNotifications((list) => notificationsList([...list, ...reply.notifications]));
      const found = reply.notifications.flatMap((notification) => matchWith(other, notification) ?? []);
      setMatches((list) => addMatches(list, found));
    });
  }, [isConnected, ws.client, other]);

  // Once the conversation is known: its history, joining it (for typing and catch-up after a
  // reconnect), and the other user's presence, which is only answered to people who share one.
  useEffect(() => {
    // Unknown until asked below: the server only tells presence to users sharing an open
    // conversation, so what we knew may be stale (after an unmatch, or while offline).
    setOtherOnline(undefined);
    setOtherTyping(false);
    if (conversationId === undefined || !isConnected) return;
    let stale = false;
    /** A refusal: forbidden means the match was removed (maybe while this page was closed). */
    const failed = (what: string, error: { code: string; message: string }) => {
      if (error.code === "forbidden") setClosed((set) => withItem(set, conversationId));
      else if (!stale) setError(`${what} failed: ${error.message}`);
    };
    void (async () => {
      const history = await ws.client.sync(conversationId);
      if (!history.success) return failed("Loading the conversation", history.error);
      setLines((list) => merge(list, history.messages));
      const joined = await ws.joinConversation(conversationId, { afterSeq: history.messages.at(-1)?.seq ?? 0 });
      if (!joined.success) return failed("Joining the conversation", joined.error);
      if (stale) return;
      setOpened(conversationId);
      const presence = await ws.presence([other]);
      if (!stale && presence.success) setOtherOnline(presence.users[other]?.online ?? false);
    })();
    return () => {
      stale = true;
    };
  }, [conversationId, isConnected, ws, other]);

  // Read receipts. Both panes are always on screen, so a message shown is a message read: tell
  // the sender, once per newest message of theirs (message:read covers the ones before it too).
  // A receipt that fails is not worth an error: the next message sends another.
  const lastFromOther = shown.findLast((line) => line.senderId === other);
  useEffect(() => {
    if (!ready || lastFromOther === undefined || reportedRead.current === lastFromOther.id) return;
    reportedRead.current = lastFromOther.id;
    void ws.client.markRead(lastFromOther.conversationId, lastFromOther.id);
  }, [ready, lastFromOther, ws.client]);

  // Every message of mine up to the newest one the other user has read is read.
  const readUpTo = Math.max(0, ...shown.filter((line) => readByOther.has(line.id)).map((line) => line.seq));

  function typed(text: string) {
    setDraft(text);
    if (!ready || conversationId === undefined) return;
    if (typingTimer.current === undefined) void ws.typing(conversationId, true);
    clearTimeout(typingTimer.current);
    typingTimer.current = setTimeout(() => {
      typingTimer.current = undefined;
      void ws.typing(conversationId, false);
    }, TYPING_IDLE_MS);
  }

  async function submit(event: FormEvent) {
    event.preventDefault();
    const content = draft.trim();
    if (!ready || conversationId === undefined || content === "") return;
    const target = conversationId;
    setDraft("");
    if (typingTimer.current !== undefined) {
      clearTimeout(typingTimer.current);
      typingTimer.current = undefined;
      void ws.typing(target, false);
    }
    // Shown at once as "sending…", then replaced by the stored message or marked as refused.
    const key = nextKey.current++;
    setOutgoing((list) => [...list, { key, conversationId: target, content }]);
    const sent = await ws.sendMessage(target, content);
    if (sent.success) {
      const { messageId: id, seq, createdAt } = sent;
      setLines((list) => merge(list, [{ id, conversationId: target, seq, senderId: me, content, createdAt }]));
      setOutgoing((list) => list.filter((out) => out.key !== key));
      return;
    }
    const reason =
      sent.error.code === "forbidden"
        ? `the conversation is closed (${sent.error.message})`
        : `${sent.error.code}: ${sent.error.message}`;
    setOutgoing((list) => list.map((out) => (out.key === key ? { ...out, error: reason } : out)));
    // Also said above the composer: when the conversation was closed, the pane moves on and
    // the refused message is no longer in view.
    const quoted = content.length > 40 ? `${content.slice(0, 40)}…` : content;
    setError(`Not sent: “${quoted}”: ${reason}`);
    if (sent.error.code === "forbidden") setClosed((set) => withItem(set, target));
  }

  async function unmatch() {
    if (current === undefined) return;
    try {
      const response = await fetch(`/api/match/${encodeURIComponent(current.matchId)}`, { method: "DELETE" });
      if (!response.ok) setError(`Unmatch failed: ${await response.text()}`);
      // Success: match:removed comes to both users and closes the conversation.
    } catch (error) {
      setError(`Unmatch failed: ${String(error)}`);
    }
  }

  const presence = otherOnline === undefined ? "unknown" : otherOnline ? "online" : "offline";
  const hint =
    current !== undefined
      ? ready
        ? ""
        : "Opening the conversation…"
      : matches.length > 0
        ? `You and ${other} unmatched: that conversation is closed. Press “Match” for a new match.`
        : "No conversation yet: press “Match”.";
  return (
    <section className="pane" data-testid={`pane-${me}`}>
      <h2>{me}</h2>
      <div className="status">
        <span className={`badge ${isConnected ? "on" : "off"}`} data-testid="connection">
          {isConnected ? "connected" : "disconnected"}
        </span>
        <span className={`badge ${otherOnline ? "on" : otherOnline === false ? "off" : ""}`} data-testid="presence">
          {other} {presence}
        </span>
      </div>
      <ul className="notifications" data-testid="notifications">
        {notifications.slice(0, 3).map((notification) => {
          const data = matchDataOf(notification);
          const ended = data !== undefined && closed.has(data.conversationId);
          return (
            <li key={notification.id} className={ended ? "ended" : ""} data-match-id={data?.matchId}>
              <strong>{notification.title}</strong> {notification.message}
              {ended && <em> (unmatched)</em>}
            </li>
          );
        })}
      </ul>
      {ready && (
        <div className="conversation">
          <span>
            Match <code data-testid="match-id">{current.matchId}</code>
          </span>
          <button type="button" data-testid="unmatch" onClick={unmatch}>
            Unmatch
          </button>
        </div>
      )}
      {hint && (
        <p className="hint" data-testid="hint">
          {hint}
        </p>
      )}
      <ul className="messages" data-testid="messages">
        {shown.map((line) => (
          <li key={line.id} className={line.senderId === me ? "mine" : ""}>
            <span className="text">{line.content}</span>
            <span className="meta">
              <Time iso={line.createdAt} />
              {line.senderId === me && (
                <span className="receipt" data-testid="receipt">
                  {line.seq <= readUpTo ? "✓✓ read" : "✓ sent"}
                </span>
              )}
            </span>
          </li>
        ))}
        {shownOutgoing.map((out) => (
          <li key={`out-${out.key}`} className={`mine ${out.error === undefined ? "sending" : "failed"}`}>
            <span className="text">{out.content}</span>
            <span className="meta">{out.error === undefined ? "sending…" : `not sent: ${out.error}`}</span>
          </li>
        ))}
      </ul>
      <div className="typing" data-testid="typing">
        {otherTyping ? `${other} is typing…` : ""}
      </div>
      {error && (
        <p className="error" role="alert" data-testid="error">
          <span>{error}</span>
          <button type="button" onClick={() => setError("")} aria-label="Dismiss">
            ×
          </button>
        </p>
      )}
      <form onSubmit={submit}>
        <input
          data-testid="composer"
          value={draft}
          placeholder={ready ? `Message ${other}` : "Waiting for a match"}
          disabled={!ready}
          onChange={(event) => typed(event.target.value)}
        />
        <button type="submit" disabled={!ready}>
          Send
        </button>
      </form>
    </section>
  );
}

function App({ config }: { config: DemoConfig }) {
  const [status, setStatus] = useState("");
  const [first, second] = config.users;
  if (first === undefined || second === undefined) return <p>The demo needs two users.</p>;

  // Every press is a new match: the demo server makes a fresh matchId each time (see the top).
  async function match() {
    setStatus("publishing a match…");
    try {
      const response = await fetch("/api/match", { method: "POST" });
      if (!response.ok) return setStatus(`match failed: ${await response.text()}`);
      const { matchId } = (await response.json()) as { matchId: string };
      setStatus(`match published: ${matchId}`);
    } catch (error) {
      setStatus(`match failed: ${String(error)}`);
    }
  }

  // socket.io-client's default transports: long-polling first (across origins, which the
  // edge's CORS headers allow), then the upgrade to a websocket.
  const options = (token: string) => ({ url: config.edgeUrl, token });
  return (
    <>
      <header>
        <h1>Switchboard demo · edge {config.edgeUrl}</h1>
        <span className="match-status" data-testid="match-status">
          {status}
        </span>
        <button data-testid="match" onClick={match}>
          Match {first.id} and {second.id}
        </button>
      </header>
      <main className="panes">
        <SwitchboardProvider options={options(first.token)}>
          <Pane me={first.id} other={second.id} />
        </SwitchboardProvider>
        <SwitchboardProvider options={options(second.token)}>
          <Pane me={second.id} other={first.id} />
        </SwitchboardProvider>
      </main>
    </>
  );
}

const config = (await (await fetch("/config.json")).json()) as DemoConfig;
const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App config={config} />
    </StrictMode>,
  );
}
