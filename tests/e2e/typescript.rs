//! The TypeScript kit's contract types (`clients/typescript/src/generated/contract.ts`) are
//! exactly what the Rust contract types generate now: changing a payload type without
//! regenerating the file fails here.

use switchboard::contract::typescript::{OUTPUT, REGENERATE, generate};

#[test]
fn the_typescript_kit_types_match_the_rust_contract() {
    switchboard_tests::assert_generated_file_is_current(
        OUTPUT,
        &generate(),
        "the Rust contract types (shared/src/contract)",
        REGENERATE,
    );
}
