import { afterEach, describe, expect, it } from "vitest";

import type { SwitchboardClient } from "../src/client.js";
import type { MessageNew } from "../src/generated/contract.js";
import { message, sleep, startServer, testClient, until, type TestServer } from "./harness.js";

const CONVERSATION = "0190a6f4-0000-7000-8000-000000000001";
/** A conversation of the user that the client never joins: its messages come through the user's room. */
const OTHER = "0190a6f4-0000-7000-8000-000000000002";
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

/** Records what the message:new listeners get, per conversation, in order. */
function record(c: SwitchboardClient): Map<string, number[]> {
  const got = new Map<string, number[]>();
  c.on("message:new", (m: MessageNew) => {
    const seqs = got.get(m.conversationId) ?? [];
    got.set(m.conversationId, [...seqs, m.seq]);
  });
  return got;
}

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

  it("also syncs, without joining, a conversation it only received messages of", async () => {
    const joins: string[] = [];
    const syncs: Array<[string, number]> = [];
    server = await startServer((socket, index) => {
      if (index === 0) socket.emit("message:new", message(OTHER, 1));
      socket.on("conversation:join", (payload, ack) => {
        joins.push(payload.conversationId);
        ack(ok());
      });
      socket.on("messages:sync", (payload, ack) => {
        syncs.push([payload.conversationId, payload.afterSeq]);
        ack(ok({ messages: [message(OTHER, 2)], hasMore: false }));
      });
    });
    client = testClient(server);
    const got = record(client);
    await until("message 1", () => got.get(OTHER)?.length === 1);

    server.sockets[0]?.conn.close();
    await until("the catch-up", () => got.get(OTHER)?.length === 2);

    expect(got.get(OTHER)).toEqual([1, 2]);
    expect(syncs).toEqual([[OTHER, 1]]);
    expect(joins).toEqual([]);
    expect(client.isJoined(OTHER)).toBe(false);
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

describe("on sync:required", () => {
  it("syncs joined and not-joined conversations it knows, without joining again, each message once and in order", async () => {
    const since = "2025-01-01T00:00:00Z";
    const joins: string[] = [];
    const syncs: Array<[string, number]> = [];
    server = await startServer((socket) => {
      socket.on("conversation:join", (payload, ack) => {
        joins.push(payload.conversationId);
        ack(ok());
        // Live before the broker outage: two messages of the joined conversation, one of the other.
        for (const seq of [1, 2]) socket.emit("message:new", message(CONVERSATION, seq));
        socket.emit("message:new", message(OTHER, 1));
      });
      socket.on("messages:sync", (payload, ack) => {
        syncs.push([payload.conversationId, payload.afterSeq]);
        if (payload.conversationId === OTHER) {
          ack(ok({ messages: [message(OTHER, 2), message(OTHER, 3)], hasMore: false }));
        } else if (payload.afterSeq === 2) {
          // Live messages during the catch-up: a new one (6) and one the sync also returns (4).
          socket.emit("message:new", message(CONVERSATION, 6));
          socket.emit("message:new", message(CONVERSATION, 4));
          ack(ok({ messages: [message(CONVERSATION, 3), message(CONVERSATION, 4)], hasMore: true }));
        } else {
          ack(ok({ messages: [message(CONVERSATION, 5)], hasMore: false }));
        }
      });
    });
    client = testClient(server);
    const got = record(client);
    const signals: string[] = [];
    // Typed by the contract: the payload is SyncRequired.
    client.on("sync:required", (payload) => signals.push(payload.since));
    await client.joinConversation(CONVERSATION);
    await until("the live messages", () => got.get(CONVERSATION)?.length === 2 && got.get(OTHER)?.length === 1);

    server.sockets[0]?.emit("sync:required", { since });
    await until("the catch-up", () => got.get(CONVERSATION)?.length === 6 && got.get(OTHER)?.length === 3);
    await sleep(50); // nothing more comes

    expect(got.get(CONVERSATION)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(got.get(OTHER)).toEqual([1, 2, 3]);
    expect(syncs.sort()).toEqual([
      [CONVERSATION, 2],
      [CONVERSATION, 4],
      [OTHER, 1],
    ].sort());
    expect(joins).toEqual([CONVERSATION]); // the socket kept its rooms
    expect(server.sockets).toHaveLength(1); // and its connection
    expect(signals).toEqual([since]);
    expect(client.lastSeq(CONVERSATION)).toBe(6);
    expect(client.lastSeq(OTHER)).toBe(3);
  });
});

describe("a catch-up of many conversations", () => {
  it("fetches at most catchUpConcurrency of them at once, and every one of them", async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `00000000-0000-7000-8000-0000000000${10 + i}`);
    let inFlight = 0;
    let most = 0;
    const synced: string[] = [];
    server = await startServer((socket) => {
      socket.on("messages:sync", (payload, ack) => {
        inFlight++;
        most = Math.max(most, inFlight);
        // Answered a little later, so that requests overlap if the client lets them.
        setTimeout(() => {
          inFlight--;
          synced.push(payload.conversationId);
          ack(ok({ messages: [message(payload.conversationId, 2)], hasMore: false }));
        }, 20);
      });
    });
    const c = testClient(server, { catchUpConcurrency: 3 });
    client = c;
    const got = record(c);
    await until("connected", () => c.connected);
    for (const id of ids) server.sockets[0]?.emit("message:new", message(id, 1));
    await until("the live messages", () => ids.every((id) => got.get(id)?.length === 1));

    server.sockets[0]?.emit("sync:required", { since: "2025-01-01T00:00:00Z" });
    await until("every conversation caught up", () => ids.every((id) => got.get(id)?.length === 2));

    expect(most).toBe(3);
    expect(synced.sort()).toEqual([...ids].sort());
    for (const id of ids) expect(got.get(id)).toEqual([1, 2]);
  });
});

describe("a gap in a conversation's seqs", () => {
  const GRACE = 200;

  it("is filled with messages:sync after the grace period, the later message waiting for the missing one", async () => {
    let sentAt = 0;
    let syncedAt = 0;
    const joins: string[] = [];
    const syncs: number[] = [];
    server = await startServer((socket) => {
      socket.on("conversation:join", (payload, ack) => {
        joins.push(payload.conversationId);
        ack(ok());
      });
      socket.on("messages:sync", (payload, ack) => {
        syncedAt = Date.now();
        syncs.push(payload.afterSeq);
        ack(ok({ messages: [message(OTHER, 2), message(OTHER, 3)], hasMore: false }));
        // A late copy of the missing message: already delivered, so dropped.
        socket.emit("message:new", message(OTHER, 2));
      });
    });
    client = testClient(server, { gapGraceMs: GRACE });
    const got = record(client);
    await until("the connection", () => client?.connected === true);
    server.sockets[0]?.emit("message:new", message(OTHER, 1));
    await until("message 1", () => got.get(OTHER)?.length === 1);

    // Message 2 is lost on its way: 3 arrives right behind 1.
    sentAt = Date.now();
    server.sockets[0]?.emit("message:new", message(OTHER, 3));
    await until("the catch-up", () => got.get(OTHER)?.length === 3);
    await sleep(50);

    // 3 was held until 2 came: listeners get seq order, each message once.
    expect(got.get(OTHER)).toEqual([1, 2, 3]);
    expect(syncs).toEqual([1]);
    expect(joins).toEqual([]); // not joined, and a sync does not need it
    expect(syncedAt - sentAt).toBeGreaterThanOrEqual(GRACE - 5); // not before the grace (timer rounding aside)
    expect(client.lastSeq(OTHER)).toBe(3);
  });

  it("left by this socket's own acked send does not cause a sync when the other user's message comes within the grace", async () => {
    const syncs: number[] = [];
    server = await startServer((socket) => {
      socket.on("message:send", (_payload, ack) => {
        // Another user's message 2 was stored first but reaches this socket after our ack of 3.
        ack(ok({ messageId: "m3", seq: 3, createdAt: "t" }));
        setTimeout(() => socket.emit("message:new", message(OTHER, 2)), 50);
      });
      socket.on("messages:sync", (payload, ack) => {
        syncs.push(payload.afterSeq);
        ack(ok({ messages: [], hasMore: false }));
      });
    });
    client = testClient(server, { gapGraceMs: GRACE });
    const got = record(client);
    await until("the connection", () => client?.connected === true);
    server.sockets[0]?.emit("message:new", message(OTHER, 1));
    await until("message 1", () => got.get(OTHER)?.length === 1);

    const sent = await client.sendMessage(OTHER, "mine");
    expect(sent).toMatchObject({ success: true, seq: 3 });
    await until("message 2", () => got.get(OTHER)?.length === 2);
    await sleep(GRACE + 150); // past the grace period

    expect(got.get(OTHER)).toEqual([1, 2]); // our own 3 is not handed to the listeners
    expect(syncs).toEqual([]);
    expect(client.lastSeq(OTHER)).toBe(3);
  });

  it("holds another user's message that overtakes this socket's own ack, and delivers it when the ack comes", async () => {
    const syncs: number[] = [];
    server = await startServer((socket) => {
      socket.on("message:send", (_payload, ack) => {
        // Our message got seq 2, another user's 3 reaches this socket before our ack does.
        socket.emit("message:new", message(OTHER, 3));
        setTimeout(() => ack(ok({ messageId: "m2", seq: 2, createdAt: "t" })), 50);
      });
      socket.on("messages:sync", (payload, ack) => {
        syncs.push(payload.afterSeq);
        ack(ok({ messages: [], hasMore: false }));
      });
    });
    client = testClient(server, { gapGraceMs: GRACE });
    const got = record(client);
    await until("the connection", () => client?.connected === true);
    server.sockets[0]?.emit("message:new", message(OTHER, 1));
    await until("message 1", () => got.get(OTHER)?.length === 1);

    const arrived: number[] = [];
    client.socket.on("message:new", (m) => arrived.push(m.seq)); // the wire, before the client's ordering
    const sending = client.sendMessage(OTHER, "mine");
    await until("message 3 on the wire", () => arrived.includes(3));
    expect(got.get(OTHER)).toEqual([1]); // held: 2 is unknown yet
    await sending;
    expect(got.get(OTHER)).toEqual([1, 3]); // released by the ack itself, not by the grace period
    await sleep(GRACE + 150);

    expect(got.get(OTHER)).toEqual([1, 3]);
    expect(syncs).toEqual([]);
    expect(client.lastSeq(OTHER)).toBe(3);
  });

  it("is synced once more when sync:required comes while its catch-up runs", async () => {
    const syncs: number[] = [];
    server = await startServer((socket) => {
      socket.on("messages:sync", (payload, ack) => {
        syncs.push(payload.afterSeq);
        if (payload.afterSeq === 1) {
          // The broker outage ends while this page is on its way: 4 was lost after the page was read.
          socket.emit("sync:required", { since: "2025-01-01T00:00:00Z" });
          ack(ok({ messages: [message(OTHER, 2), message(OTHER, 3)], hasMore: false }));
        } else {
          ack(ok({ messages: [message(OTHER, 4)], hasMore: false }));
        }
      });
    });
    client = testClient(server, { gapGraceMs: GRACE });
    const got = record(client);
    await until("the connection", () => client?.connected === true);
    server.sockets[0]?.emit("message:new", message(OTHER, 1));
    server.sockets[0]?.emit("message:new", message(OTHER, 3));
    await until("both catch-ups", () => got.get(OTHER)?.length === 4);
    await sleep(50);

    expect(got.get(OTHER)).toEqual([1, 2, 3, 4]);
    expect(syncs).toEqual([1, 3]);
  });

  it("that the server refuses to sync (the conversation was closed) delivers what it held and forgets the conversation", async () => {
    let syncs = 0;
    server = await startServer((socket) => {
      socket.on("messages:sync", (_payload, ack) => {
        syncs++;
        ack(fail("forbidden"));
      });
    });
    client = testClient(server, { gapGraceMs: GRACE });
    const got = record(client);
    await until("the connection", () => client?.connected === true);
    server.sockets[0]?.emit("message:new", message(OTHER, 1));
    server.sockets[0]?.emit("message:new", message(OTHER, 3));
    await until("message 3, after the refused sync", () => got.get(OTHER)?.length === 2);
    await sleep(GRACE + 150);

    expect(got.get(OTHER)).toEqual([1, 3]);
    expect(syncs).toBe(1);
    expect(client.lastSeq(OTHER)).toBeUndefined();

    // Forgotten: the next catch-up leaves it out.
    server.sockets[0]?.emit("sync:required", { since: "2025-01-01T00:00:00Z" });
    await sleep(100);
    expect(syncs).toBe(1);
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
