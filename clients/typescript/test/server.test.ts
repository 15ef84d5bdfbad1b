import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

import { afterEach, describe, expect, it } from "vitest";

import {
  createEmitter,
  InvalidRequestError,
  NotFoundError,
  UnauthorizedError,
  UnavailableError,
  type SwitchboardEmitter,
} from "../src/server.js";

interface Seen {
  method: string | undefined;
  url: string | undefined;
  authorization: string | undefined;
  contentType: string | undefined;
  body: unknown;
}

/** A stand-in for the edge's ingress: records each request and answers `reply(request)`. */
async function ingress(reply: (request: Seen) => [number, unknown]) {
  const seen: Seen[] = [];
  const server = createServer(async (req: IncomingMessage, res) => {
    let raw = "";
    for await (const chunk of req) raw += chunk;
    const request: Seen = {
      method: req.method,
      url: req.url,
      authorization: req.headers.authorization,
      contentType: req.headers["content-type"],
      body: raw === "" ? undefined : JSON.parse(raw),
    };
    seen.push(request);
    const [status, body] = reply(request);
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  http = server;
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { seen, emitter: createEmitter({ url, apiKey: "dev-key" }) };
}

let http: Server | undefined;
afterEach(async () => {
  await new Promise((resolve) => (http ? http.close(resolve) : resolve(undefined)));
  http = undefined;
});

describe("requests", () => {
  let seen: Seen[];
  let emitter: SwitchboardEmitter;

  it("emitToUser and emitToRoom post to /api/v1/emit with the bearer key", async () => {
    ({ seen, emitter } = await ingress(() => [202, {}]));

    await emitter.emitToUser("alice", "hello", { n: 1 });
    await emitter.emitToRoom("conversation:0190a6f4-0000-7000-8000-000000000001", "typing:start", {
      conversationId: "0190a6f4-0000-7000-8000-000000000001",
      userId: "bob",
    });

    expect(seen).toEqual([
      {
        method: "POST",
        url: "/api/v1/emit",
        authorization: "Bearer dev-key",
        contentType: "application/json",
        body: { userId: "alice", event: "hello", data: { n: 1 } },
      },
      {
        method: "POST",
        url: "/api/v1/emit",
        authorization: "Bearer dev-key",
        contentType: "application/json",
        body: {
          room: "conversation:0190a6f4-0000-7000-8000-000000000001",
          event: "typing:start",
          data: { conversationId: "0190a6f4-0000-7000-8000-000000000001", userId: "bob" },
        },
      },
    ]);
  });

  it("createConversation, publishMatch, removeMatch and notify use their routes and return the answers", async () => {
    ({ seen, emitter } = await ingress(({ url }) => {
      if (url === "/api/v1/conversations") return [201, { conversationId: "c-1" }];
      if (url === "/api/v1/notifications") return [202, { id: "n-1" }];
      if (url === "/api/v1/matches") return [202, { matchId: "m:1", conversationId: "c-2" }];
      return [202, {}];
    }));

    expect(await emitter.createConversation(["alice", "bob"])).toEqual({ conversationId: "c-1" });
    expect(await emitter.publishMatch({ matchId: "m:1", userIds: ["alice", "bob"] })).toEqual({
      matchId: "m:1",
      conversationId: "c-2",
    });
    await emitter.removeMatch("m:1");
    expect(await emitter.notify({ userId: "bob", type: "system", title: "Hi", message: "Welcome" })).toEqual({
      id: "n-1",
    });

    expect(seen.map((r) => [r.method, r.url, r.body])).toEqual([
      ["POST", "/api/v1/conversations", { participants: ["alice", "bob"] }],
      ["POST", "/api/v1/matches", { matchId: "m:1", userIds: ["alice", "bob"] }],
      ["DELETE", "/api/v1/matches/m%3A1", undefined],
      ["POST", "/api/v1/notifications", { userId: "bob", type: "system", title: "Hi", message: "Welcome" }],
    ]);
    expect(seen.every((r) => r.authorization === "Bearer dev-key")).toBe(true);
  });
});

describe("the calls of issue 18", () => {
  it("conversationMessages, presence, userConversations and disconnectUser use their routes and return the answers", async () => {
    const page = { messages: [], hasMore: false };
    const presence = { users: { alice: { online: true, lastSeenAt: null } } };
    const conversations = { conversations: [] };
    const { seen, emitter } = await ingress(({ url }) => {
      if (url?.endsWith("/messages") || url?.includes("/messages?")) return [200, page];
      if (url === "/api/v1/presence/query") return [200, presence];
      if (url?.endsWith("/conversations")) return [200, conversations];
      return [202, {}];
    });

    expect(await emitter.conversationMessages("0190a6f4-0000-7000-8000-000000000001")).toEqual(page);
    expect(
      await emitter.conversationMessages("0190a6f4-0000-7000-8000-000000000001", { afterSeq: 7, limit: 2 }),
    ).toEqual(page);
    expect(await emitter.presence(["alice"])).toEqual(presence);
    expect(await emitter.userConversations("a:b")).toEqual(conversations);
    await emitter.disconnectUser("alice");
    await emitter.disconnectUser("alice", { revokeSessions: true });

    expect(seen.map((r) => [r.method, r.url, r.body])).toEqual([
      ["GET", "/api/v1/conversations/0190a6f4-0000-7000-8000-000000000001/messages", undefined],
      ["GET", "/api/v1/conversations/0190a6f4-0000-7000-8000-000000000001/messages?afterSeq=7&limit=2", undefined],
      ["POST", "/api/v1/presence/query", { userIds: ["alice"] }],
      ["GET", "/api/v1/users/a%3Ab/conversations", undefined],
      ["DELETE", "/api/v1/users/alice/sockets", undefined],
      ["DELETE", "/api/v1/users/alice/sockets?revokeSessions=true", undefined],
    ]);
    expect(seen.every((r) => r.authorization === "Bearer dev-key")).toBe(true);
  });

  it("an unknown conversation is NotFoundError", async () => {
    const body = { error: { code: "not_found", message: "no such conversation" } };
    const { emitter } = await ingress(() => [404, body]);

    const error = await emitter
      .conversationMessages("0190a6f4-0000-7000-8000-000000000009")
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ status: 404, code: "not_found" });
  });
});

describe("errors", () => {
  it.each([
    [400, { error: { code: "invalid", message: "userIds must be two different users" } }, InvalidRequestError],
    [401, { error: { code: "unauthorized", message: "a valid ingress key is required" } }, UnauthorizedError],
    [503, { error: { code: "unavailable", message: "the message bus is unavailable" } }, UnavailableError],
    [504, { error: { code: "timeout", message: "no answer in time" } }, UnavailableError],
  ])("%i becomes a typed error carrying the contract's code", async (status, body, type) => {
    const { emitter } = await ingress(() => [status, body]);

    const error = await emitter.publishMatch({ matchId: "m", userIds: ["a", "a"] }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(type);
    expect(error).toMatchObject({ status, code: body.error.code });
    expect((error as Error).message).toContain(body.error.message);
  });

  it("no answer at all is unavailable, status 0", async () => {
    // A port nothing listens on: bind one, note it, close it.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    const emitter = createEmitter({ url: `http://127.0.0.1:${port}`, apiKey: "k" });

    const error = await emitter.emitToUser("alice", "hello", {}).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(UnavailableError);
    expect(error).toMatchObject({ status: 0 });
  });
});
