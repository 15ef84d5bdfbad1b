// React bindings: `useWebSocket()` with the shape components of the system we replace already
// use (isConnected, on, off, emit, sendMessage returning { success, messageId }), plus
// joinConversation, typing and presence. Listeners added through the hook are removed when the
// component unmounts, so a component cannot leak them.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useSyncExternalStore,
  useState,
  type ReactNode,
} from "react";

import {
  connect,
  type ClientEventName,
  type ConnectOptions,
  type Reply,
  type SendResult,
  type ServerEventName,
  type SwitchboardClient,
} from "./client.js";
import type {
  Ack,
  ClientEvents,
  ConversationId,
  Empty,
  PresenceReply,
  ServerEvents,
  UserId,
} from "./generated/contract.js";

const SwitchboardContext = createContext<SwitchboardClient | null>(null);

export interface SwitchboardProviderProps {
  /** A client made elsewhere (the provider leaves its connection alone)... */
  client?: SwitchboardClient;
  /** ...or the options of one the provider opens on mount and closes on unmount. Read once: give the provider a new `key` to connect with other options. */
  options?: ConnectOptions;
  children?: ReactNode;
}

/** Makes a client available to `useWebSocket()` in the components below. */
export function SwitchboardProvider({ client, options, children }: SwitchboardProviderProps) {
  // Made without connecting: React may call this initializer twice and keep one, and only the
  // effect below (which React pairs with its cleanup) may open a socket.
  const [owned] = useState(() =>
    client === undefined && options !== undefined ? connect({ ...options, autoConnect: false }) : undefined,
  );
  useEffect(() => {
    if (owned === undefined) return;
    owned.connect();
    return () => owned.close();
  }, [owned]);
  const value = client ?? owned;
  if (value === undefined) throw new Error("SwitchboardProvider needs a client or options");
  return createElement(SwitchboardContext.Provider, { value }, children);
}

export interface UseWebSocket {
  client: SwitchboardClient;
  isConnected: boolean;
  /** Listens until `off`, the returned function, or unmount, whichever comes first. */
  on<E extends ServerEventName>(event: E, listener: (payload: ServerEvents[E]) => void): () => void;
  on(event: string, listener: (...args: unknown[]) => void): () => void;
  off<E extends ServerEventName>(event: E, listener: (payload: ServerEvents[E]) => void): void;
  off(event: string, listener: (...args: unknown[]) => void): void;
  emit<E extends ClientEventName>(event: E, payload: ClientEvents[E]["payload"]): Promise<Reply<E>>;
  /** Resolves to `{ success: true, messageId, ... }` or `{ success: false, error }`; retries safely. */
  sendMessage(conversationId: ConversationId, content: string): Promise<SendResult>;
  joinConversation(conversationId: ConversationId, options?: { afterSeq?: number }): Promise<Ack<Empty>>;
  leaveConversation(conversationId: ConversationId): Promise<Ack<Empty>>;
  typing(conversationId: ConversationId, isTyping: boolean): Promise<Ack<Empty>>;
  presence(userIds: UserId[]): Promise<Ack<PresenceReply>>;
}

type Listener = (...args: unknown[]) => void;

/** The connection of the nearest `SwitchboardProvider`, or of `client` when given. */
export function useWebSocket(client?: SwitchboardClient): UseWebSocket {
  const provided = useContext(SwitchboardContext);
  const active = client ?? provided;
  if (active === null) {
    throw new Error("useWebSocket needs a client: pass one, or render inside <SwitchboardProvider>");
  }
  // A stable subscribe function, or React would unsubscribe and subscribe again on every render.
  const subscribe = useCallback((notify: () => void) => active.onConnectionChange(notify), [active]);
  const isConnected = useSyncExternalStore(subscribe, () => active.connected, () => false);

  // Every listener added through this hook, to remove on unmount (or when the client changes).
  const added = useRef(new Map<string, Set<Listener>>());
  useEffect(() => {
    const listeners = added.current;
    return () => {
      for (const [event, set] of listeners) for (const listener of set) active.off(event, listener);
      listeners.clear();
    };
  }, [active]);

  // The functions stay the same while the client does, so effects may depend on them.
  const actions = useMemo(() => {
    const off = (event: string, listener: Listener) => {
      active.off(event, listener);
      added.current.get(event)?.delete(listener);
    };
    const on = (event: string, listener: Listener) => {
      active.on(event, listener);
      let set = added.current.get(event);
      if (set === undefined) added.current.set(event, (set = new Set()));
      set.add(listener);
      return () => off(event, listener);
    };
    return {
      client: active,
      on,
      off,
      emit: (event, payload) => active.emit(event, payload),
      sendMessage: (conversationId, content) => active.sendMessage(conversationId, content),
      joinConversation: (conversationId, options) => active.joinConversation(conversationId, options),
      leaveConversation: (conversationId) => active.leaveConversation(conversationId),
      typing: (conversationId, isTyping) => active.typing(conversationId, isTyping),
      presence: (userIds) => active.presence(userIds),
    } as Omit<UseWebSocket, "isConnected">;
  }, [active]);
  return useMemo(() => ({ ...actions, isConnected }), [actions, isConnected]);
}
