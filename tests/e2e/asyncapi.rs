//! The AsyncAPI document of the bus, `docs/asyncapi.yaml` (docs/reference.md, Processes), stays in step
//! with the code: the official parser (`tests/node/asyncapi-check.mjs`) finds no error in it,
//! it documents exactly the message kinds of `switchboard::contract::bus::KINDS`, and its
//! channels cover the exchanges of `switchboard::bus::topology` and the route of every kind.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_json::Value;
use switchboard::{
    bus::{Shard, route, topology},
    contract::{
        ConversationId,
        bus::{FIXED_ROUTES, KINDS},
    },
};
use uuid::Uuid;

#[test]
fn the_asyncapi_document_is_valid_and_documents_exactly_the_bus_messages() {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let node = tests.join("node");
    let document = tests.join("../docs/asyncapi.yaml");
    assert!(document.exists(), "{} is missing: the bus must be documented there", document.display());
    assert!(
        node.join("node_modules/@asyncapi/parser").exists(),
        "tests/node has no @asyncapi/parser: run `npm ci --prefix tests/node` (tests/run does)"
    );
    let output = Command::new("node")
        .arg(node.join("asyncapi-check.mjs"))
        .arg(&document)
        .current_dir(&node)
        .output()
        .expect("run node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "docs/asyncapi.yaml is not valid AsyncAPI 3 ({}); fix the document as the parser \
         says:\n{stderr}{stdout}",
        output.status
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("asyncapi-check.mjs printed no JSON summary ({e}):\n{stdout}{stderr}"));
    let documented = strings(&summary, "messages");
    let channels = strings(&summary, "channels");

    let kinds: BTreeSet<String> = KINDS.iter().map(|kind| kind.to_string()).collect();
    let undocumented: Vec<&String> = kinds.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&kinds).collect();
    let mut problems = Vec::new();
    if !undocumented.is_empty() {
        problems.push(format!(
            "bus message kinds missing from docs/asyncapi.yaml: {undocumented:?}. Add each to \
             components.messages with `name: <kind>` and an envelope payload schema matching its Rust \
             type, and reference it from the channel it travels on"
        ));
    }
    if !unknown.is_empty() {
        problems.push(format!(
            "docs/asyncapi.yaml documents messages that are not bus kinds: {unknown:?}. Every message \
             `name` must be a kind of switchboard::contract::bus::KINDS (shared/src/contract/bus.rs): \
             fix the name, remove the message, or add the kind to KINDS if the code really sends it"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Channel addresses are `<exchange>/<routing key>`, or the exchange alone for a fanout.
    for (exchange, _) in topology::EXCHANGES {
        assert!(
            channels.iter().any(|c| c == exchange || c.starts_with(&format!("{exchange}/"))),
            "no channel of docs/asyncapi.yaml is on the exchange {exchange:?} (addresses are \
             `<exchange>/<routing key>`); document it. Channels: {channels:?}"
        );
    }
    // Routing keys with a variable part are documented with a parameter in its place.
    let nil = ConversationId(Uuid::nil());
    let room_key = route::conversation_room_key(nil).replace(&nil.to_string(), "{conversationId}");
    let shard_key = Shard::of(nil).key().replace("messages.shard.0", "messages.shard.{shard}");
    let mut addresses = vec![
        ("conversation room", format!("{}/{room_key}", topology::EVENTS_TOPIC)),
        ("chat shard", format!("{}/{shard_key}", topology::EVENTS_TOPIC)),
    ];
    for (kind, exchange, key) in FIXED_ROUTES {
        addresses.push((kind, format!("{exchange}/{key}")));
    }
    for (what, address) in addresses {
        assert!(
            channels.contains(&address),
            "docs/asyncapi.yaml has no channel {address:?} for the route of {what:?} \
             (shared/src/contract/bus.rs); document it. Channels: {channels:?}"
        );
    }
}

fn strings(summary: &Value, field: &str) -> BTreeSet<String> {
    summary[field]
        .as_array()
        .unwrap_or_else(|| panic!("asyncapi-check.mjs printed no {field:?} list: {summary}"))
        .iter()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect()
}
