//! The TypeScript kit's contract types (`clients/typescript/src/generated/contract.ts`) are
//! exactly what the Rust contract types generate now: changing a payload type without
//! regenerating the file fails here.

use std::path::PathBuf;

use switchboard::contract::typescript::{OUTPUT, REGENERATE, generate};

#[test]
fn the_typescript_kit_types_match_the_rust_contract() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(OUTPUT);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let fresh = generate();
    if committed == fresh {
        return;
    }
    let (was, now): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), fresh.lines().collect());
    let line = (0..was.len().max(now.len()))
        .find(|&i| was.get(i) != now.get(i))
        .unwrap_or_else(|| was.len().min(now.len()));
    let (was, now) = (was.get(line).copied().unwrap_or("<end>"), now.get(line).copied().unwrap_or("<end>"));
    let line = line + 1;
    panic!(
        "{OUTPUT} is out of date with the Rust contract types (shared/src/contract). Run \
         `{REGENERATE}` and commit the result.\nFirst difference, line {line}:\n  file:      {was}\n  \
         generated: {now}"
    );
}
