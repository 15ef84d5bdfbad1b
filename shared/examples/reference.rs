//! Writes the reference for clients, backends and operators (`docs/reference.md`) from the Rust
//! types. Run after changing a contract type, a setting, an error code or an ingress route:
//!
//! ```sh
//! cargo run -p switchboard --features typescript --example reference
//! ```
//!
//! Without the feature it only says so (see `examples/typescript.rs` for why the feature is not
//! declared with `required-features`).

#[cfg(feature = "typescript")]
fn main() -> anyhow::Result<()> {
    use switchboard::reference::{OUTPUT, generate};

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(OUTPUT);
    std::fs::write(&path, generate())?;
    println!("wrote {OUTPUT}");
    Ok(())
}

#[cfg(not(feature = "typescript"))]
fn main() {
    eprintln!("run it with the feature: cargo run -p switchboard --features typescript --example reference");
    std::process::exit(64);
}
