//! The contract in TypeScript, for the kit in `clients/typescript` (feature `typescript`).
//!
//! [`generate`] writes one file: every type a client sends or receives, and every body and answer
//! of the HTTP ingress (for the kit's emitter), declared by `ts-rs` from the Rust types
//! themselves (names, serde renames, optional fields, doc comments), then the event maps built
//! from the one list of client events (`client.rs`) and of server events (`server.rs`),
//! including the two interfaces `socket.io-client` types a socket with:
//! `Socket<ServerToClientEvents, ClientToServerEvents>`. Nothing in it is written by hand.
//!
//! The file is checked in; `tests/e2e/typescript.rs` fails while it differs from what the types
//! generate now, and `clients/typescript/generate` rewrites it.

use std::{any::TypeId, collections::BTreeMap, fmt::Write as _};

use ts_rs::{Config, TS, TypeVisitor};

use super::{AckError, client, ingress, server};

/// The generated file, relative to the workspace root.
pub const OUTPUT: &str = "clients/typescript/src/generated/contract.ts";

/// The command that regenerates [`OUTPUT`], from the workspace root.
pub const REGENERATE: &str = "clients/typescript/generate";

/// Receives the event lists of `client.rs` and `server.rs`.
pub(crate) trait EventSink {
    fn client<P: TS + 'static, R: TS + 'static>(&mut self, name: &'static str);
    fn server<P: TS + 'static>(&mut self, name: &'static str);
}

/// The whole TypeScript file.
pub fn generate() -> String {
    render(&Contract::collect())
}

/// The contract as `ts-rs` declares it: every type a client sends or receives, the ingress's
/// bodies and answers, and the event lists. Read by this file's generator and by the reference's (`crate::reference`).
#[derive(Default)]
pub(crate) struct Contract {
    pub(crate) config: Config,
    /// TypeScript name -> declaration, sorted by name so the output is stable.
    pub(crate) declarations: BTreeMap<String, Declaration>,
    /// (event, payload, reply) in the order of the list.
    pub(crate) client_events: Vec<(&'static str, String, String)>,
    /// (event, payload) in the order of the list.
    pub(crate) server_events: Vec<(&'static str, String)>,
}

/// One declared type.
pub(crate) struct Declaration {
    /// The Rust type, so two types with one TypeScript name are caught.
    id: TypeId,
    /// The doc comment as `ts-rs` writes it (`/** ... */`), or empty.
    pub(crate) docs: String,
    /// `type Name = ...;`
    pub(crate) decl: String,
}

impl Contract {
    /// Every type the client and server event lists and the ingress name, with what they refer
    /// to.
    pub(crate) fn collect() -> Self {
        // Every integer of the contract (seq, limits) reaches JavaScript through JSON.parse,
        // which makes numbers, never bigints; they all stay far below 2^53.
        let mut contract = Contract { config: Config::new().with_large_int("number"), ..Contract::default() };
        client::visit_events(&mut contract);
        server::visit_events(&mut contract);
        // Types no event names but clients still meet: the failure of every ack, and the `data`
        // of a notification of type `match`.
        contract.declare::<AckError>();
        contract.declare::<server::MatchNotificationData>();
        // The bodies and answers of the HTTP ingress, for the kit's emitter.
        ingress::visit_types(&mut contract);
        contract
    }

    /// Declares `T` and, recursively, every type it refers to.
    fn declare<T: TS + 'static + ?Sized>(&mut self) {
        // Primitives and wrappers (string, Array, ...) have no declaration of their own.
        if T::output_path().is_none() {
            return;
        }
        let name = T::ident(&self.config);
        // Types that stand in for others (serde_json::Value for ts-rs' JsonValue) share one id.
        let id = TypeId::of::<T::WithoutGenerics>();
        match self.declarations.get(&name) {
            Some(seen) if seen.id == id => return,
            Some(_) => panic!("two contract types are both called {name} in TypeScript; rename one"),
            None => {}
        }
        let declaration =
            Declaration { id, docs: T::docs().unwrap_or_default(), decl: T::decl(&self.config) };
        self.declarations.insert(name, declaration);
        T::visit_dependencies(self);
    }
}

fn render(contract: &Contract) -> String {
    let mut out = format!(
        "// Generated from the Rust contract types (shared/src/contract) by ts-rs. Do not edit:\n\
             // after changing them run `{REGENERATE}`; a test fails until the two agree.\n"
    );
    for declaration in contract.declarations.values() {
        let _ = write!(out, "\n{}export {}\n", declaration.docs, declaration.decl);
    }
    out.push_str(
        "\n/** The acknowledgement of every client event: the reply's fields next to `success: true`, \
             or the error. */\n\
             export type Ack<Reply> = ({ success: true } & Reply) | { success: false; error: AckError };\n",
    );

    let mut lists = String::new();
    lists.push_str(
        "\n/** Every client event: its payload and its success reply. */\nexport interface ClientEvents {\n",
    );
    for (event, payload, reply) in &contract.client_events {
        let _ = writeln!(lists, "  \"{event}\": {{ payload: {payload}; reply: {reply} }};");
    }
    lists.push_str("}\n\n/** Every server event and its payload. */\nexport interface ServerEvents {\n");
    for (event, payload) in &contract.server_events {
        let _ = writeln!(lists, "  \"{event}\": {payload};");
    }
    lists.push_str(
        "}\n\n/** Client events for `socket.io-client`'s typed `Socket<ServerToClientEvents, \
             ClientToServerEvents>`: every event takes an acknowledgement. */\n\
             export interface ClientToServerEvents {\n",
    );
    for (event, payload, reply) in &contract.client_events {
        let _ = writeln!(
            lists,
            "  \"{event}\": (payload: {payload}, ack: (reply: Ack<{reply}>) => void) => void;"
        );
    }
    lists.push_str("}\n\n/** Server events for `socket.io-client`'s typed `Socket`. */\nexport interface ServerToClientEvents {\n");
    for (event, payload) in &contract.server_events {
        let _ = writeln!(lists, "  \"{event}\": (payload: {payload}) => void;");
    }
    lists.push_str("}\n\n/** The names of every client event, in the contract's order. */\nexport const clientEventNames = [\n");
    for (event, _, _) in &contract.client_events {
        let _ = writeln!(lists, "  \"{event}\",");
    }
    lists.push_str("] as const satisfies readonly (keyof ClientEvents)[];\n\n/** The names of every server event. */\nexport const serverEventNames = [\n");
    for (event, _) in &contract.server_events {
        let _ = writeln!(lists, "  \"{event}\",");
    }
    lists.push_str("] as const satisfies readonly (keyof ServerEvents)[];\n");
    out + &lists
}

impl TypeVisitor for Contract {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        self.declare::<T>();
    }
}

impl EventSink for Contract {
    fn client<P: TS + 'static, R: TS + 'static>(&mut self, name: &'static str) {
        assert!(self.client_events.iter().all(|e| e.0 != name), "client event {name} is listed twice");
        self.declare::<P>();
        self.declare::<R>();
        let (payload, reply) = (P::name(&self.config), R::name(&self.config));
        self.client_events.push((name, payload, reply));
    }

    fn server<P: TS + 'static>(&mut self, name: &'static str) {
        assert!(self.server_events.iter().all(|e| e.0 != name), "server event {name} is listed twice");
        self.declare::<P>();
        let payload = P::name(&self.config);
        self.server_events.push((name, payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde shapes come out as clients see them: camelCase, optional fields, renames.
    #[test]
    fn declarations_follow_serde() {
        // The declarations without their comments, on one line each.
        let mut file = String::new();
        let mut rest = generate();
        while let Some(start) = rest.find("/**") {
            file.push_str(&rest[..start]);
            rest = rest[start..].split_once("*/").map(|(_, after)| after.to_owned()).unwrap_or_default();
        }
        file.push_str(&rest);
        let file = file.split_whitespace().collect::<Vec<_>>().join(" ");
        let has = |text: &str| assert!(file.contains(text), "{text:?} is not in:\n{file}");
        has(
            "export type MessageSend = { conversationId: ConversationId, content: Content, clientMessageId?: ClientMessageId, };",
        );
        has(
            "export type MessagesSync = { conversationId: ConversationId, afterSeq: number, limit?: number, };",
        );
        has("export type NotificationsList = { unreadOnly?: boolean, limit?: number, };");
        has("id: NotificationId, type: string, title: string");
        has("lastSeenAt: string | null");
        has(
            "export type ErrorCode = \"invalid\" | \"forbidden\" | \"not_found\" | \"rate_limited\" | \"unavailable\" | \"timeout\";",
        );
        has("\"message:send\": (payload: MessageSend, ack: (reply: Ack<MessageSent>) => void) => void;");
        has("\"typing:stop\": (payload: Typing) => void;");
        has("export type UserId = string;");
        // The ingress's bodies, as the kit's emitter sends them.
        has(
            "export type MatchRequest = { matchId: MatchId, userIds: [UserId, UserId], createdAt?: string, };",
        );
        has("export type MessagesParams = { afterSeq?: number, limit?: number, };");
        has("export type Room = `user:${UserId}` | `conversation:${ConversationId}`;");
        has(
            "export type EmitRequest = { userId?: UserId, room?: Room, event: EventName, data?: JsonValue, };",
        );
    }
}
