//! The OpenAPI document: the copy committed for the web client
//! (`clients/web/openapi.json`, which its types are generated from) is what
//! the binary prints, and the answers the document says every gated route
//! shares are what the server sends.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;

#[test]
fn the_committed_document_is_what_sessiongate_openapi_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate")).arg("openapi").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/web/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        printed == committed,
        "clients/web/openapi.json is not what `sessiongate openapi` prints: run \
         `cargo run -- openapi > clients/web/openapi.json`, then `npm run build` in clients/web"
    );
}

/// Every `code` the server sends here is one of the document's enum.
#[tokio::test]
async fn the_problems_the_gate_sends_have_documented_codes_and_headers() {
    let app = spawn_app_with(
        "[[rate_limit.policies]]\nname = \"tight\"\nlimit = 1\nwindow = \"60s\"\nroutes = [\"GET /v1/sessions\"]",
    )
    .await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let codes = doc["components"]["schemas"]["ProblemCode"]["enum"].as_array().unwrap().clone();
    let alice = token("alice");
    let unauthenticated = app.client.get(app.url("/v1/sessions")).send().await.unwrap();
    assert!(unauthenticated.headers().contains_key("www-authenticate"));
    assert!(
        app.client
            .get(app.url("/v1/sessions"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let limited = app.client.get(app.url("/v1/sessions")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    for header in ["retry-after", "ratelimit", "ratelimit-policy", "x-request-id"] {
        assert!(limited.headers().contains_key(header), "{header}");
    }
    for r in [unauthenticated, limited] {
        let body: Value = r.json().await.unwrap();
        assert!(codes.contains(&body["code"]), "{} is not in {codes:?}", body["code"]);
        if body["code"] == "RATE_LIMITED" {
            assert_eq!(body["violated_policies"], serde_json::json!(["tight"]));
        }
    }
}
