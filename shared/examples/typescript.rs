//! Writes the TypeScript kit's contract types (`clients/typescript/src/generated/contract.ts`)
//! from the Rust types. Run after changing a contract type (or use `clients/typescript/generate`):
//!
//! ```sh
//! cargo run -p switchboard --features typescript --example typescript
//! ```
//!
//! Without the feature it only says so: it is not declared with `required-features` in
//! `Cargo.toml`, because a declared example must exist wherever the manifest is read, and the
//! container build reads the manifests before it copies the sources (deploy/Dockerfile).

#[cfg(feature = "typescript")]
fn main() -> anyhow::Result<()> {
    use switchboard::contract::typescript::{OUTPUT, generate};

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(OUTPUT);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, generate())?;
    println!("wrote {OUTPUT}");
    Ok(())
}

#[cfg(not(feature = "typescript"))]
fn main() {
    eprintln!("run it with the feature: cargo run -p switchboard --features typescript --example typescript");
    std::process::exit(64);
}
