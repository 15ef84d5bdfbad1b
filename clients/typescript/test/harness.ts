// A real Socket.IO server on a free local port, scripted by each test, so the client library is
// exercised through the real socket.io-client: acks, timeouts, disconnects and reconnects.

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

import { Server, type Socket } from "socket.io";

import { connect, type ConnectOptions, type SwitchboardClient } from "../src/client.js";

export interface TestServer {
  url: string;
  io: Server;
  /** Every connection so far, in order. */
  sockets: Socket[];
  close(): Promise<void>;
}

/** Starts a server; `setup` runs for each connection, with its index (0 for the first). */
export async function startServer(setup: (socket: Socket, index: number) => void): Promise<TestServer> {
  const http = createServer();
  const io = new Server(http);
  const sockets: Socket[] = [];
  io.on("connection", (socket) => {
    sockets.push(socket);
    setup(socket, sockets.length - 1);
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  return { url, io, sockets, close: () => new Promise<void>((resolve) => io.close(() => resolve())) };
}

/** A client of `server` that reconnects at once and retries without waiting. */
export function testClient(server: TestServer, options: Partial<ConnectOptions> = {}): SwitchboardClient {
  return connect({
    url: server.url,
    token: "test-token",
    retryDelayMs: 1,
    ...options,
    socket: { transports: ["websocket"], reconnectionDelay: 10, reconnectionDelayMax: 20, ...options.socket },
  });
}

/** Waits until `check` holds, polling; fails after `timeoutMs`. */
export async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Waits `ms`: for checks that something did NOT happen within a time. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A message:new payload with the given seq. */
export function message(conversationId: string, seq: number) {
  return {
    id: `m${seq}`,
    conversationId,
    senderId: "bob",
    content: `message ${seq}`,
    seq,
    createdAt: new Date(0).toISOString(),
  };
}
