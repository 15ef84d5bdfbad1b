import { afterEach, describe, expect, it } from "vitest";

import type { SwitchboardClient } from "../src/client.js";
import type { MessageNew } from "../src/generated/contract.js";
import { message, startServer, testClient, until, type TestServer } from "./harness.js";

const CONVERSATION = "0190a6f4-0000-7000-8000-000000000001";
const ok = (fields: object = {}) => ({ success: true, ...fields });
const fail = (code: string) => ({ success: false, error: { code, message: code } });

let server: TestServer | undefined;
let client: SwitchboardClient | undefined;
afterEach(async () => {
  client?.close();
  await server?.close();
  client = server = undefined;
});

describe("sendMessage", () => {
  it("retries timeout and unavailable with the same clientMessageId until it succeeds", async () => {
    const sends: Array<{ clientMessageId: string; content: string }> = [];
    const answers = [fail("timeout"), fail("unavailable"), ok({ messageId: "m1", seq: 1, createdAt: "t" })];
    server = await startServer((socket) => {
      socket.on("message:send", (payload, ack) => {
        sends.push(payload);
        ack(answers[sends.length - 1]);
      });
    });
    client = testClient(server);

    const result = await client.sendMessage(CONVERSATION, "hello");

    expect(result).toMatchObject({ success: true, messageId: "m1", seq: 1 });
    expect(sends).toHaveLength(3);
    expect(new Set(sends.map((s) => s.clientMessageId)).size).toBe(1);
    expect(result.clientMessageId).toBe(sends[0]?.clientMessageId);
    expect(sends.every((s) => s.content === "hello")).toBe(true);
  });

  it("retries when no acknowledgement comes at all, with the same clientMessageId", async () => {
    const ids: string[] = [];
    server = await startServer((socket) => {
      socket.on("message:send", (payload, ack) => {
        ids.push(payload.clientMessageId);
        // The first attempt is lost: no answer.
        if (ids.length > 1) ack(ok({ messageId: "m1", seq: 1, createdAt: "t" }));
      });
    });
    client = testClient(server, { ackTimeoutMs: 100 });

    const result = await client.sendMessage(CONVERSATION, "hello", { clientMessageId: "mine-1" });

    expect(result.success).toBe(true);
    expect(ids).toEqual(["mine-1", "mine-1"]);
  });

  it("does not retry a refusal", async () => {
    let sends = 0;
    server = await startServer((socket) => {
      socket.on("message:send", (_payload, ack) => {
        sends++;
        ack(fail("forbidden"));
      });
    });
    client = testClient(server);

    const result = await client.sendMessage(CONVERSATION, "hello");

    expect(result).toMatchObject({ success: false, error: { code: "forbidden" } });
    expect(sends).toBe(1);
  });

  it("gives up after sendAttempts and reports the timeout", async () => {
    let sends = 0;
    server = await startServer((socket) => {
      socket.on("message:send", (_payload, ack) => {
        sends++;
        ack(fail("timeout"));
      });
    });
    client = testClient(server, { sendAttempts: 3 });

    const result = await client.sendMessage(CONVERSATION, "hello");

    expect(result).toMatchObject({ success: false, error: { code: "timeout" } });
    expect(sends).toBe(3);
  });
});

describe("after a reconnect", () => {
  it("joins again and syncs from the last seq seen, page by page, delivering each message once and in order", async () => {
    const joins: number[] = [];
    const syncs: Array<{ afterSeq: number }> = [];
    server = await startServer((socket, index) => {
      socket.on("conversation:join", (_payload, ack) => {
        joins.push(index);
        ack(ok());
        // Before the disconnect, messages 1 to 3 arrive live.
        if (index === 0) for (const seq of [1, 2, 3]) socket.emit("message:new", message(CONVERSATION, seq));
      });
      socket.on("messages:sync", (payload, ack) => {
        syncs.push(payload);
        if (payload.afterSeq === 3) {
          // Live messages arriving while the catch-up runs: one new (7), one it also fetches (5).
          socket.emit("message:new", message(CONVERSATION, 7));
          socket.emit("message:new", message(CONVERSATION, 5));
          ack(ok({ messages: [message(CONVERSATION, 4), message(CONVERSATION, 5)], hasMore: true }));
        } else {
          ack(ok({ messages: [message(CONVERSATION, 6)], hasMore: false }));
        }
      });
    });
    client = testClient(server);
    const seen: number[] = [];
    client.on("message:new", (m: MessageNew) => seen.push(m.seq));
    await client.joinConversation(CONVERSATION);
    await until("the live messages", () => seen.length === 3);

    // The network drops (not a server-side disconnect, after which clients stay away).
    server.sockets[0]?.conn.close();
    await until("the catch-up", () => seen.length === 7);

    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(joins).toEqual([0, 1]);
    expect(syncs.map((s) => s.afterSeq)).toEqual([3, 5]);
    expect(client.lastSeq(CONVERSATION)).toBe(7);
  });

  it("counts this socket's own messages as seen, so the catch-up neither asks for nor repeats them", async () => {
    const syncs: number[] = [];
    server = await startServer((socket, index) => {
      socket.on("conversation:join", (_payload, ack) => {
        ack(ok());
        if (index === 0) socket.emit("message:new", message(CONVERSATION, 1));
      });
      socket.on("message:send", (_payload, ack) => ack(ok({ messageId: "m2", seq: 2, createdAt: "t" })));
      socket.on("messages:sync", (payload, ack) => {
        syncs.push(payload.afterSeq);
        ack(ok({ messages: [message(CONVERSATION, 3)], hasMore: false }));
      });
    });
    client = testClient(server);
    const seen: number[] = [];
    client.on("message:new", (m: MessageNew) => seen.push(m.seq));
    await client.joinConversation(CONVERSATION);
    await until("message 1", () => seen.length === 1);
    await client.sendMessage(CONVERSATION, "mine");

    server.sockets[0]?.conn.close();
    await until("the catch-up", () => syncs.length === 1 && seen.length === 2);

    expect(syncs).toEqual([2]);
    expect(seen).toEqual([1, 3]);
  });

  it("stops catching up a conversation the server now refuses (it was closed)", async () => {
    let syncs = 0;
    server = await startServer((socket, index) => {
      socket.on("conversation:join", (_payload, ack) => ack(index === 0 ? ok() : fail("forbidden")));
      socket.on("messages:sync", (_payload, ack) => {
        syncs++;
        ack(ok({ messages: [], hasMore: false }));
      });
    });
    client = testClient(server);
    await client.joinConversation(CONVERSATION);
    expect(client.isJoined(CONVERSATION)).toBe(true);

    server.sockets[0]?.conn.close();
    await until("the second connection", () => server?.sockets.length === 2 && client?.connected === true);
    await until("the conversation to be forgotten", () => client?.isJoined(CONVERSATION) === false);

    expect(syncs).toBe(0);
  });
});

it("delivers another user's message that arrives after this socket's own later one", async () => {
  server = await startServer((socket) => {
    socket.on("conversation:join", (_payload, ack) => ack(ok()));
    socket.on("message:send", (_payload, ack) => ack(ok({ messageId: "m5", seq: 5, createdAt: "t" })));
  });
  client = testClient(server);
  const seen: number[] = [];
  client.on("message:new", (m: MessageNew) => seen.push(m.seq));
  await client.joinConversation(CONVERSATION);
  await client.sendMessage(CONVERSATION, "mine");

  server.sockets[0]?.emit("message:new", message(CONVERSATION, 4));
  await until("message 4", () => seen.length === 1);

  expect(seen).toEqual([4]);
  expect(client.lastSeq(CONVERSATION)).toBe(5);
});

it("sends the token in the handshake and passes other events to their listeners", async () => {
  let token: unknown;
  server = await startServer((socket) => {
    token = socket.handshake.auth.token;
    socket.emit("greeting", { text: "hi" });
  });
  client = testClient(server, { token: "alice-token" });
  const greetings: unknown[] = [];
  const off = client.on("greeting", (data) => greetings.push(data));

  await until("the greeting", () => greetings.length === 1);

  expect(token).toBe("alice-token");
  expect(greetings).toEqual([{ text: "hi" }]);
  off();
  expect(client.listenerCount("greeting")).toBe(0);
});

it("without a token sends no auth and asks the browser to send its cookies", async () => {
  let auth: unknown;
  server = await startServer((socket) => {
    auth = socket.handshake.auth;
  });
  client = testClient(server, { token: undefined });

  await until("the connection", () => client?.connected === true);

  expect(auth).toEqual({});
  expect(client.socket.io.opts.withCredentials).toBe(true);
});
