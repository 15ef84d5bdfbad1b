//! The ingress's OpenAPI document (issue 18): `docs/openapi.json` is what the code generates
//! now, and the edge serves the same.

use switchboard_edge::ingress::{OPENAPI_OUTPUT, OPENAPI_PATH, OPENAPI_REGENERATE, openapi_json};
use switchboard_tests::{Bin, TestEnv};

#[test]
fn the_openapi_document_matches_the_code() {
    switchboard_tests::assert_generated_file_is_current(
        OPENAPI_OUTPUT,
        &openapi_json(),
        "the ingress's routes (bins/edge/src/ingress.rs) and types (shared/src/contract/ingress.rs)",
        OPENAPI_REGENERATE,
    );
}

#[tokio::test]
async fn the_edge_serves_the_openapi_document_without_a_key() {
    let env = TestEnv::new().await;
    let edge = env.spawn_ready(Bin::Edge, &[]).await;
    let (status, body) = edge.get(OPENAPI_PATH).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, openapi_json());
    let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["ingressKey"]["scheme"], "bearer");
}
