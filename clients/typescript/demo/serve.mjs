// Serves the demo chat page (demo/dist, built by `npm run build`) and, for development only,
// endpoints that publish and remove matches between the two demo users with the kit's server
// emitter, over the edge's HTTP ingress, as a host application's backend would.
//
//   GET    /                    the page (two panes: alice and bob, each with its own socket)
//   GET    /config.json         where the page finds the edge, and the demo users' session tokens
//   POST   /api/match           publishes a new match alice-bob: 202 { matchId }, a fresh id each time
//   DELETE /api/match/:matchId  the unmatch: closes that match's conversation
//
// A matchId is single-use: re-posting a removed one is answered 202 and changes nothing (the
// server never revives it). So a re-match is a new match, with a new matchId and conversation.
//
// Environment: DEMO_PORT (5173; 0 picks a free port), DEMO_HOST (0.0.0.0), SWITCHBOARD_URL (the
// edge as this server reaches it, http://localhost:3001), SWITCHBOARD_PUBLIC_URL (the edge as
// browsers reach it; default: SWITCHBOARD_URL's port on the host the page was loaded from),
// SWITCHBOARD_INGRESS_KEY (dev-key).

import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

import { createEmitter } from "../dist/server.js";

// The sessions deploy/dev creates (and the browser test adds to its own database).
const USERS = [
  { id: "alice", token: "alice-token" },
  { id: "bob", token: "bob-token" },
];
const env = process.env;
const edgeUrl = new URL(env.SWITCHBOARD_URL ?? "http://localhost:3001");
const emitter = createEmitter({ url: edgeUrl.href, apiKey: env.SWITCHBOARD_INGRESS_KEY ?? "dev-key" });
const root = fileURLToPath(new URL("./dist/", import.meta.url));
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };

function send(res, status, body, type = "application/json") {
  res.writeHead(status, { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" });
  res.end(typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

/** Answers an ingress failure: 400 when the edge refused the request, else 502. */
function failed(res, what, error) {
  console.error(`${what} failed: ${error.message}`);
  const status = error.status === 400 ? 400 : 502;
  return send(res, status, { error: { code: error.code ?? "unavailable", message: error.message } });
}

/** The edge as the browser reaches it: by default on the host it loaded this page from. */
function publicEdgeUrl(req) {
  if (env.SWITCHBOARD_PUBLIC_URL) return env.SWITCHBOARD_PUBLIC_URL;
  const host = new URL(`http://${req.headers.host ?? "localhost"}`).hostname;
  const url = new URL(edgeUrl.href);
  url.hostname = host;
  return url.origin;
}

async function handle(req, res) {
  const { pathname } = new URL(req.url ?? "/", "http://demo");
  if (req.method === "GET" && pathname === "/config.json") {
    return send(res, 200, { edgeUrl: publicEdgeUrl(req), users: USERS });
  }
  if (req.method === "POST" && pathname === "/api/match") {
    const matchId = `demo-${randomUUID()}`;
    try {
      await emitter.publishMatch({ matchId, userIds: [USERS[0].id, USERS[1].id] });
      return send(res, 202, { matchId });
    } catch (error) {
      return failed(res, "publishing the match", error);
    }
  }
  const unmatch = /^\/api\/match\/([^/]+)$/.exec(pathname);
  if (req.method === "DELETE" && unmatch) {
    try {
      await emitter.removeMatch(decodeURIComponent(unmatch[1]));
      return send(res, 202, {});
    } catch (error) {
      return failed(res, "removing the match", error);
    }
  }
  if (req.method !== "GET") return send(res, 405, { error: { code: "invalid", message: "method not allowed" } });
  // Static files from dist/, never outside it.
  const path = normalize(join(root, pathname === "/" ? "index.html" : pathname));
  if (!path.startsWith(root.endsWith(sep) ? root : root + sep)) return send(res, 404, "not found", "text/plain");
  try {
    return send(res, 200, await readFile(path), TYPES[extname(path)] ?? "application/octet-stream");
  } catch {
    return send(res, 404, "not found (did `npm run build` run?)", "text/plain");
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => send(res, 500, { error: { code: "unavailable", message: String(error) } }));
});
server.listen(Number(env.DEMO_PORT ?? 5173), env.DEMO_HOST ?? "0.0.0.0", () => {
  const { port } = server.address();
  console.log(`Switchboard demo on http://localhost:${port}/ (edge ${edgeUrl.origin})`);
});
// Nothing to drain: requests are short and the page reconnects by itself.
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
