// Switchboard test driver: lets the Rust end-to-end tests drive the official
// `socket.io-client` from a child process.
//
// Protocol: newline-delimited JSON in both directions.
//   * stdin  - one command object per line.
//   * stdout - one event object per line, and nothing else (diagnostics go to
//              stderr). The first line is always {"type":"ready"}.
// One process hosts any number of clients, each identified by a name.
//
// Commands:
//   {"cmd":"connect","client":"c1","url":"http://127.0.0.1:1234","options":{...}}
//       io(url, {forceNew: true, reconnection: false, ...options}); an existing
//       client with the same name is silently torn down and replaced.
//   {"cmd":"emit","client":"c1","event":"name","args":[...],"req":7,"ack":true,"timeoutMs":5000}
//       ack=true  -> {"type":"ack","client","req","reply","replies"}
//                    or {"type":"ack_timeout","client","req","message"}
//       ack=false -> {"type":"emitted","client","req"}
//   {"cmd":"disconnect","client":"c1"}       socket.disconnect(), then forget it
//   {"cmd":"close_transport","client":"c1"}  socket.io.engine.close() (dropped network)
//   {"cmd":"exit"}                           disconnect everything, exit 0 (same on stdin EOF)
//   "req" is echoed back verbatim (null if absent); "timeoutMs" defaults to 5000.
//
// Events (all carry "client"):
//   {"type":"connect","id","transport"}    {"type":"connect_error","message","data"}
//   {"type":"disconnect","reason"}         {"type":"event","event","args"}
//   {"type":"reconnect","attempt"}         {"type":"error","message"} (bad command)
//
// "reply" is the first ack argument (null if none); "replies" holds all of them.
// "ack_timeout" is also what you get if the socket disconnects before the ack
// arrives; "message" tells the two apart. With the default transports the
// "transport" in "connect" may already be "websocket" (upgrade is racy).

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

/** name -> Socket */
const clients = new Map();
let exiting = false;

function log(...parts) {
  try {
    process.stderr.write(`[driver] ${parts.join(" ")}\n`);
  } catch {
    // stderr gone: nothing sensible left to do
  }
}

function jsonOrNull(value) {
  return value === undefined ? null : value;
}

/** Writes exactly one JSON line with a single write() call. */
function send(obj) {
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (err) {
    line = JSON.stringify({
      type: "error",
      client: jsonOrNull(obj && obj.client),
      message: `could not serialize ${obj && obj.type} message: ${err.message}`,
    });
  }
  try {
    process.stdout.write(line + "\n");
  } catch (err) {
    log("stdout write failed:", err.message);
  }
}

function reportError(client, message) {
  send({ type: "error", client: jsonOrNull(client), message: String(message) });
}

/** Runs fn, turning any exception into an "error" line instead of a crash. */
function guarded(client, what, fn) {
  return (...args) => {
    try {
      return fn(...args);
    } catch (err) {
      log(`exception in ${what} for ${client}:`, err && err.stack ? err.stack : err);
      reportError(client, `${what}: ${err && err.message ? err.message : err}`);
    }
  };
}

/** Stops a socket without letting it report anything further. */
function silence(socket) {
  socket.offAny();
  socket.removeAllListeners();
  socket.io.removeAllListeners();
}

function connect(name, url, options) {
  const old = clients.get(name);
  if (old) {
    clients.delete(name);
    silence(old);
    old.disconnect();
  }

  const socket = io(url, { forceNew: true, reconnection: false, ...options });
  clients.set(name, socket);
  // Events from a socket that has since been replaced are dropped.
  const current = () => clients.get(name) === socket;

  socket.on(
    "connect",
    guarded(name, "connect handler", () => {
      if (!current()) return;
      const engine = socket.io.engine;
      send({
        type: "connect",
        client: name,
        id: jsonOrNull(socket.id),
        transport: engine && engine.transport ? engine.transport.name : null,
      });
    }),
  );
  socket.on(
    "connect_error",
    guarded(name, "connect_error handler", (err) => {
      if (!current()) return;
      send({
        type: "connect_error",
        client: name,
        message: err && err.message !== undefined ? String(err.message) : String(err),
        data: jsonOrNull(err ? err.data : undefined),
      });
    }),
  );
  socket.on(
    "disconnect",
    guarded(name, "disconnect handler", (reason) => {
      if (!current()) return;
      send({ type: "disconnect", client: name, reason: jsonOrNull(reason) });
    }),
  );
  socket.onAny(
    guarded(name, "event handler", (event, ...args) => {
      if (!current()) return;
      send({ type: "event", client: name, event, args });
    }),
  );
  socket.io.on(
    "reconnect",
    guarded(name, "reconnect handler", (attempt) => {
      if (!current()) return;
      send({ type: "reconnect", client: name, attempt: jsonOrNull(attempt) });
    }),
  );
}

function emit(name, socket, cmd) {
  const event = cmd.event;
  const args = cmd.args === undefined ? [] : cmd.args;
  const req = jsonOrNull(cmd.req);
  if (typeof event !== "string") {
    reportError(name, "emit: \"event\" must be a string");
    return;
  }
  if (!Array.isArray(args)) {
    reportError(name, "emit: \"args\" must be an array");
    return;
  }

  if (cmd.ack) {
    const timeoutMs = cmd.timeoutMs === undefined ? 5000 : Number(cmd.timeoutMs);
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      reportError(name, "emit: \"timeoutMs\" must be a non-negative number");
      return;
    }
    socket.timeout(timeoutMs).emit(
      event,
      ...args,
      guarded(name, "ack handler", (err, ...replies) => {
        if (err) {
          // Timeout, or the socket disconnected before the ack arrived.
          send({ type: "ack_timeout", client: name, req, message: String(err.message ?? err) });
        } else {
          send({ type: "ack", client: name, req, reply: jsonOrNull(replies[0]), replies });
        }
      }),
    );
  } else {
    socket.emit(event, ...args);
    send({ type: "emitted", client: name, req });
  }
}

function disconnectAll() {
  for (const [name, socket] of clients) {
    try {
      socket.disconnect();
    } catch (err) {
      log(`disconnect of ${name} failed:`, err && err.message);
    }
  }
  clients.clear();
}

function shutdown() {
  if (exiting) return;
  exiting = true;
  disconnectAll();
  // Rather than exiting right away, stop reading stdin and let the event loop
  // drain, so in-flight close packets (e.g. the final polling POST) reach the
  // server and it sees a clean "client namespace disconnect". The timer only
  // matters if something lingers (e.g. a server that never answers a close).
  process.exitCode = 0;
  rl.close();
  process.stdin.destroy();
  setTimeout(() => process.exit(0), 1500).unref();
}

function lookup(cmd) {
  const name = cmd.client;
  if (typeof name !== "string" || name === "") {
    reportError(name, `${cmd.cmd}: "client" must be a non-empty string`);
    return null;
  }
  const socket = clients.get(name);
  if (!socket) {
    reportError(name, `${cmd.cmd}: unknown client ${JSON.stringify(name)}`);
    return null;
  }
  return socket;
}

function handleLine(line) {
  if (exiting || line.trim() === "") return;

  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    reportError(null, `malformed command (invalid JSON): ${err.message}`);
    return;
  }
  if (cmd === null || typeof cmd !== "object" || Array.isArray(cmd)) {
    reportError(null, "malformed command: expected a JSON object");
    return;
  }
  const client = typeof cmd.client === "string" ? cmd.client : null;

  try {
    switch (cmd.cmd) {
      case "connect": {
        if (typeof cmd.client !== "string" || cmd.client === "") {
          reportError(client, "connect: \"client\" must be a non-empty string");
          return;
        }
        if (typeof cmd.url !== "string") {
          reportError(client, "connect: \"url\" must be a string");
          return;
        }
        const options = cmd.options === undefined || cmd.options === null ? {} : cmd.options;
        if (typeof options !== "object" || Array.isArray(options)) {
          reportError(client, "connect: \"options\" must be an object");
          return;
        }
        connect(cmd.client, cmd.url, options);
        return;
      }
      case "emit": {
        const socket = lookup(cmd);
        if (socket) emit(cmd.client, socket, cmd);
        return;
      }
      case "disconnect": {
        const socket = lookup(cmd);
        if (!socket) return;
        // The resulting "disconnect" event is still reported; then forget it.
        socket.disconnect();
        clients.delete(cmd.client);
        silence(socket);
        return;
      }
      case "close_transport": {
        const socket = lookup(cmd);
        if (!socket) return;
        const engine = socket.io.engine;
        if (!engine) {
          reportError(client, "close_transport: client has no engine (not connected)");
          return;
        }
        engine.close();
        return;
      }
      case "exit":
        shutdown();
        return;
      default:
        reportError(client, `unknown command ${JSON.stringify(cmd.cmd)}`);
    }
  } catch (err) {
    log(`exception while handling ${line}:`, err && err.stack ? err.stack : err);
    reportError(client, `${cmd.cmd}: ${err && err.message ? err.message : err}`);
  }
}

process.on("uncaughtException", (err) => {
  log("uncaught exception:", err && err.stack ? err.stack : err);
  reportError(null, `uncaught exception: ${err && err.message ? err.message : err}`);
});
process.on("unhandledRejection", (err) => {
  log("unhandled rejection:", err && err.stack ? err.stack : err);
  reportError(null, `unhandled rejection: ${err && err.message ? err.message : err}`);
});
process.stdout.on("error", (err) => {
  // The test harness went away (EPIPE): nobody is listening any more.
  log("stdout error:", err.message);
  process.exit(0);
});

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
rl.on("line", handleLine);
rl.on("close", shutdown);

send({ type: "ready" });
