//! Writes the OpenAPI document of the ingress (`docs/openapi.json`) from the edge's routes and
//! the contract's types. Run after changing an ingress route or one of its types:
//!
//! ```sh
//! cargo run -p switchboard-edge --example openapi
//! ```

fn main() -> std::io::Result<()> {
    use switchboard_edge::ingress::{OPENAPI_OUTPUT, openapi_json};

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(OPENAPI_OUTPUT);
    std::fs::write(&path, openapi_json())?;
    println!("wrote {OPENAPI_OUTPUT}");
    Ok(())
}
