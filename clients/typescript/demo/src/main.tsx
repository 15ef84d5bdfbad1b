// The demo: two users, alice and bob, side by side, each with their own socket. Press "Match" and
// the demo server publishes their match; both get a notification and the conversation, see each
// other online, and can chat (with typing indicators). Everything goes through the kit:
// SwitchboardProvider and useWebSocket here, the server emitter in serve.mjs.

import { StrictMode, useEffect, useRef, useState, type FormEvent } from "react";
import { createRoot } from "react-dom/client";

import type { ConversationId, MatchNotificationData, NotificationNew } from "../../src/index.js";
import { SwitchboardProvider, useWebSocket } from "../../src/react.js";

interface DemoConfig {
  edgeUrl: string;
  users: Array<{ id: string; token: string }>;
}

/** A message as a pane shows it. */
interface Line {
  id: string;
  seq: number;
  senderId: string;
  content: string;
}

/** Adds lines to a list without duplicates (a message can come live and from a sync), in seq order. */
function merge(list: Line[], more: Line[]): Line[] {
  const byId = new Map(list.map((line) => [line.id, line]));
  for (const line of more) byId.set(line.id, line);
  return [...byId.values()].sort((a, b) => a.seq - b.seq);
}

/** The match a notification of type `match` announces. */
function matchOf(notification: NotificationNew): MatchNotificationData | undefined {
  return notification.type === "match" ? (notification.data as MatchNotificationData | undefined) : undefined;
}

/** How long after the last keystroke typing counts as stopped. */
const TYPING_IDLE_MS = 3000;

function Pane({ me, other }: { me: string; other: string }) {
  const ws = useWebSocket();
  const { on, isConnected } = ws;
  const [conversationId, setConversationId] = useState<ConversationId>();
  const [lines, setLines] = useState<Line[]>([]);
  const [otherOnline, setOtherOnline] = useState<boolean>();
  const [otherTyping, setOtherTyping] = useState(false);
  const [notifications, setNotifications] = useState<NotificationNew[]>([]);
  const [draft, setDraft] = useState("");
  const typingTimer = useRef<ReturnType<typeof setTimeout>>(undefined);

  // Events. The hook would remove these listeners on unmount anyway; removing them when the
  // effect is cleaned up also keeps React's development double-run from adding them twice.
  useEffect(() => {
    const offs = [
      on("match:new", (match) => {
        if (match.userId === other) setConversationId(match.conversationId);
      }),
      on("notification:new", (notification) => {
        setNotifications((list) => [notification, ...list]);
        const match = matchOf(notification);
        if (match?.otherUserId === other) setConversationId(match.conversationId);
      }),
      on("message:new", (message) => setLines((list) => merge(list, [message]))),
      on("user:online", (event) => event.userId === other && setOtherOnline(true)),
      on("user:offline", (event) => event.userId === other && setOtherOnline(false)),
      on("typing:start", (event) => event.userId === other && setOtherTyping(true)),
      on("typing:stop", (event) => event.userId === other && setOtherTyping(false)),
      on("match:removed", () => setConversationId(undefined)),
    ];
    return () => offs.forEach((off) => off());
  }, [on, other]);

  // After each (re)connection: the inbox, where an earlier match's conversation is found again.
  useEffect(() => {
    if (!isConnected) return;
    void ws.client.notifications({ limit: 20 }).then((reply) => {
      if (!reply.success) return;
      setNotifications(reply.notifications);
      const match = reply.notifications.map(matchOf).find((m) => m?.otherUserId === other);
      if (match) setConversationId((current) => current ?? match.conversationId);
    });
  }, [isConnected, ws.client, other]);

  // Once the conversation is known: its history, joining it (for typing and catch-up after a
  // reconnect), and the other user's presence, which is only answered to people who share one.
  useEffect(() => {
    if (conversationId === undefined || !isConnected) return;
    void (async () => {
      const history = await ws.client.sync(conversationId);
      const lines = history.success ? history.messages : [];
      setLines((list) => merge(list, lines));
      await ws.joinConversation(conversationId, { afterSeq: lines.at(-1)?.seq ?? 0 });
      const presence = await ws.presence([other]);
      if (presence.success) setOtherOnline(presence.users[other]?.online ?? false);
    })();
  }, [conversationId, isConnected, ws, other]);

  function typed(text: string) {
    setDraft(text);
    if (conversationId === undefined) return;
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
    if (conversationId === undefined || content === "") return;
    setDraft("");
    if (typingTimer.current !== undefined) {
      clearTimeout(typingTimer.current);
      typingTimer.current = undefined;
      void ws.typing(conversationId, false);
    }
    const sent = await ws.sendMessage(conversationId, content);
    if (sent.success) setLines((list) => merge(list, [{ id: sent.messageId, seq: sent.seq, senderId: me, content }]));
  }

  const presence = otherOnline === undefined ? "unknown" : otherOnline ? "online" : "offline";
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
        {notifications.slice(0, 3).map((n) => (
          <li key={n.id}>
            <strong>{n.title}</strong> {n.message}
          </li>
        ))}
      </ul>
      <ul className="messages" data-testid="messages">
        {conversationId === undefined && <p className="hint">No conversation yet: press “Match alice and bob”.</p>}
        {lines.map((line) => (
          <li key={line.id} className={line.senderId === me ? "mine" : ""}>
            {line.content}
          </li>
        ))}
      </ul>
      <div className="typing" data-testid="typing">
        {otherTyping ? `${other} is typing…` : ""}
      </div>
      <form onSubmit={submit}>
        <input
          data-testid="composer"
          value={draft}
          placeholder={conversationId ? `Message ${other}` : "Waiting for a match"}
          disabled={conversationId === undefined}
          onChange={(event) => typed(event.target.value)}
        />
        <button type="submit" disabled={conversationId === undefined}>
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

  async function match() {
    const response = await fetch("/api/match", { method: "POST" });
    setStatus(response.ok ? "match published" : `match failed: ${await response.text()}`);
  }

  // socket.io-client's default transports: long-polling first (across origins, which the
  // edge's CORS headers allow), then the upgrade to a websocket.
  const options = (token: string) => ({ url: config.edgeUrl, token });
  return (
    <>
      <header>
        <h1>Switchboard demo · edge {config.edgeUrl}</h1>
        <span data-testid="match-status">{status}</span>
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
