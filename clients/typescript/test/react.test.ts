// @vitest-environment happy-dom

import { act, createElement, useEffect } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, expect, it } from "vitest";

import type { SwitchboardClient } from "../src/client.js";
import { SwitchboardProvider, useWebSocket } from "../src/react.js";
import { message, startServer, testClient, until, type TestServer } from "./harness.js";

// Tells React that updates in these tests are wrapped in act().
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const CONVERSATION = "0190a6f4-0000-7000-8000-000000000001";

let server: TestServer | undefined;
let client: SwitchboardClient | undefined;
let root: Root | undefined;
let container: HTMLElement;
afterEach(async () => {
  if (root) act(() => root?.unmount());
  client?.close();
  await server?.close();
  client = server = root = undefined;
});

function render(element: ReturnType<typeof createElement>) {
  container = document.createElement("div");
  root = createRoot(container);
  act(() => root?.render(element));
}

/** Polls for a rendered state inside act(), so React's updates are flushed. */
async function rendered(text: string) {
  await until(`"${text}" to render`, () => container.textContent === text);
}

it("listens while mounted, follows the connection, and removes its listeners on unmount", async () => {
  server = await startServer((socket) => {
    socket.on("presence:query", (_payload, ack) => ack({ success: true, users: {} }));
  });
  client = testClient(server);
  const received: number[] = [];
  const custom: unknown[] = [];
  function Chat() {
    const { isConnected, on } = useWebSocket(client);
    useEffect(() => {
      on("message:new", (m) => received.push(m.seq));
      on("match:celebrate", (data) => custom.push(data));
      // No clean-up here on purpose: the hook must do it.
    }, [on]);
    return createElement("span", null, isConnected ? "online" : "offline");
  }

  render(createElement(Chat));
  await act(() => rendered("online"));
  expect(client.listenerCount("message:new")).toBe(1);
  expect(client.listenerCount("match:celebrate")).toBe(1);
  server.io.emit("message:new", message(CONVERSATION, 1));
  server.io.emit("match:celebrate", { confetti: true });
  await until("both events", () => received.length === 1 && custom.length === 1);

  act(() => root?.unmount());
  root = undefined;

  expect(client.listenerCount("message:new")).toBe(0);
  expect(client.listenerCount("match:celebrate")).toBe(0);
  server.io.emit("message:new", message(CONVERSATION, 2));
  // A round trip to the server proves the second message had time to arrive.
  await client.emit("presence:query", { userIds: ["bob"] });
  expect(received).toEqual([1]);
});

it("sendMessage has the { success, messageId } shape components expect", async () => {
  server = await startServer((socket) => {
    socket.on("message:send", (_payload, ack) => ack({ success: true, messageId: "m1", seq: 1, createdAt: "t" }));
  });
  client = testClient(server);
  let send: ReturnType<typeof useWebSocket>["sendMessage"] | undefined;
  function Composer() {
    send = useWebSocket(client).sendMessage;
    return null;
  }
  render(createElement(Composer));
  await act(() => until("the connection", () => client?.connected === true));

  const result = await act(() => send?.(CONVERSATION, "hello"));

  expect(result).toMatchObject({ success: true, messageId: "m1" });
});

it("SwitchboardProvider connects on mount with the token and disconnects on unmount", async () => {
  const tokens: unknown[] = [];
  let disconnected = 0;
  server = await startServer((socket) => {
    tokens.push(socket.handshake.auth.token);
    socket.on("disconnect", () => disconnected++);
  });
  function Status() {
    return createElement("span", null, useWebSocket().isConnected ? "online" : "offline");
  }
  const options = { url: server.url, token: "alice-token", socket: { transports: ["websocket"] } };

  render(createElement(SwitchboardProvider, { options }, createElement(Status)));
  await act(() => rendered("online"));
  act(() => root?.unmount());
  root = undefined;

  await until("the server to see the disconnect", () => disconnected === 1);
  expect(tokens).toEqual(["alice-token"]);
});
