//! Writes the TypeScript kit's contract types (`clients/typescript/src/generated/contract.ts`)
//! from the Rust types. Run after changing a contract type (or use `clients/typescript/generate`):
//!
//! ```sh
//! cargo run -p switchboard --features typescript --example typescript
//! ```

use std::path::Path;

use switchboard::contract::typescript::{OUTPUT, generate};

fn main() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(OUTPUT);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, generate())?;
    println!("wrote {OUTPUT}");
    Ok(())
}
