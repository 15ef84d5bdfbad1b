//! The ingress's OpenAPI document (issue 18): `docs/openapi.json` is what the code generates
//! now, the edge serves the same, and schemathesis, run against a real edge and its workers
//! with that document, finds no server error, no undocumented status and no answer that
//! contradicts its schema.

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

/// schemathesis (tests/openapi/requirements.txt, installed by tests/run into
/// target/openapi-venv) against an edge with every worker behind it, all the document's
/// operations, valid and invalid inputs alike: no answer may be a 5xx, have a status the
/// document does not list for its operation, or a body its schema does not allow.
#[tokio::test]
async fn schemathesis_finds_no_server_error_undocumented_status_or_schema_violation() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = root.join("target/openapi-venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: run tests/run once (its `OpenAPI tooling` step creates the virtualenv from \
         tests/openapi/requirements.txt)",
        st.display()
    );
    let env = TestEnv::new().await;
    let (_messages, _presence, _notifier, edge) = tokio::join!(
        env.spawn_ready(Bin::Messages, &[]),
        env.spawn_ready(Bin::Presence, &[]),
        env.spawn_ready(Bin::Notifier, &[]),
        env.spawn_ready(Bin::Edge, &[]),
    );
    // Its own working directory: schemathesis leaves files there.
    let work = root.join("target/tmp").join(&env.name);
    std::fs::create_dir_all(&work).expect("a working directory");
    let run = tokio::process::Command::new(&st)
        .current_dir(&work)
        .arg("run")
        .arg(root.join(OPENAPI_OUTPUT))
        .args(["--url", &edge.url()])
        .args(["--header", &format!("Authorization: Bearer {}", switchboard_tests::INGRESS_KEY)])
        .args(["--checks", "not_a_server_error,status_code_conformance,response_schema_conformance"])
        .args(["--max-examples", "30", "--seed", "18", "--generation-database", "none"])
        .args(["--request-timeout", "10", "--no-color"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("schemathesis finishes within 120 s")
        .expect("run schemathesis");
    let _ = std::fs::remove_dir_all(&work);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Its summary, for `--no-capture`: what it tried, by operation and phase.
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
