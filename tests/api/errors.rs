//! Every error is problem+json with a code, a request id and, where it helps,
//! a suggestion; bad input changes nothing.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_problem(r, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let r = app.get(&token("alice"), "/v1/nothing-here").await;
    assert_problem(r, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let app = spawn_app().await;
    let r = app.client.put(app.url("/v1/sessions")).bearer_auth(token("alice")).send().await.unwrap();
    assert!(r.headers().get("allow").is_some(), "405 names the allowed methods");
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
    let r = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
    // The gate comes first: a caller without a token learns nothing of a
    // route's methods.
    let r = app.client.put(app.url("/v1/sessions")).send().await.unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn broken_json_is_400_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = token("alice");
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"tool_set\": ")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST, "MALFORMED_REQUEST").await;
    assert!(app.live_ids(&alice).await.is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(token("alice"))
        .header("content-type", "text/plain")
        .body("tool_set=general")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "MALFORMED_REQUEST").await;
}

#[tokio::test]
async fn wrong_shapes_are_422_with_field_errors() {
    let app = spawn_app().await;
    let alice = token("alice");
    let body = assert_problem(
        app.post(&alice, "/v1/sessions", json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("tool_set"), "{body}");
    // Mass assignment: fields the client may not set are refused, not ignored.
    let body = assert_problem(
        app.post(&alice, "/v1/sessions", json!({"tool_set": "general", "user_id": "mallory"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("user_id"), "{body}");
    assert!(app.live_ids(&alice).await.is_empty());

    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    let body = assert_problem(
        app.post(&alice, &q, json!({"input": "  "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(body["errors"], json!([{"field": "input", "message": "must not be blank"}]));
    let got: Value =
        app.get(&alice, &format!("/v1/sessions/{}", s["id"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(got["conversation_turns"], 0, "a refused query counts no turn");
}

#[tokio::test]
async fn an_unknown_tool_set_is_422_listing_the_valid_ones() {
    let app = spawn_app().await;
    let alice = token("alice");
    let body = assert_problem(
        app.create(&alice, "astrology").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_TOOL_SET",
    )
    .await;
    assert_eq!(body["valid_tool_sets"], json!(["general", "research", "coding"]));
    assert!(body["suggestion"].as_str().unwrap().contains("general"));
    let s = app.create_ok(&alice, "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    assert_problem(
        app.patch(&alice, &path, json!({"tool_set": "astrology"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_TOOL_SET",
    )
    .await;
    let got: Value = app.get(&alice, &path).await.json().await.unwrap();
    assert_eq!(got, s, "a refused migration changes nothing");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with("[server]\nmax_body_bytes = 1024").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    let r = app.post(&alice, &q, json!({"input": "x".repeat(2000)})).await;
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;

    // A chunked body announces no length: the limit holds all the same.
    let body = format!("{{\"input\":\"{}\"}}", "x".repeat(2000));
    let request = format!(
        "POST {q} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let head = raw_exchange(app.addr, request).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn a_non_uuid_session_id_is_400() {
    let app = spawn_app().await;
    let body = assert_problem(
        app.get(&token("alice"), "/v1/sessions/abc").await,
        StatusCode::BAD_REQUEST,
        "MALFORMED_REQUEST",
    )
    .await;
    assert_eq!(body["detail"], "the session id must be a UUID");
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(token("alice"))
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({"tool_set": "general"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST, "MALFORMED_REQUEST").await;
}

#[tokio::test]
async fn an_agent_slower_than_its_timeout_is_504() {
    let app = spawn_app_with("[agent]\necho_latency = \"300ms\"\ntimeout = \"50ms\"").await;
    app.expect_failures();
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    let body = assert_problem(
        app.post(&alice, &q, json!({"input": "hi"})).await,
        StatusCode::GATEWAY_TIMEOUT,
        "UPSTREAM_TIMEOUT",
    )
    .await;
    assert_eq!(body["detail"], "the agent did not answer within 50 ms");
    assert_eq!(
        app.metric(r#"sessiongate_agent_query_duration_seconds_count{tool_set="general",outcome="timeout"}"#)
            .await,
        Some(1.0)
    );
}

/// A create whose body stops arriving after its first byte: the answer the
/// server gives, head and body, read off a raw connection.
async fn stalled_create(app: &TestApp, bearer: &str, extra_headers: &str) -> String {
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n{extra_headers}\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    raw_exchange(app.addr, request).await
}

#[tokio::test]
async fn a_request_over_the_timeout_is_408() {
    let app = spawn_app_with("[server]\nrequest_timeout = \"100ms\"").await;
    let answer = stalled_create(&app, &token("alice"), "").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"REQUEST_TIMEOUT\""), "{answer}");
}

#[tokio::test]
async fn an_agent_call_ends_before_the_request_deadline_so_it_is_a_504() {
    // agent.timeout (30 s) is longer than the request's 1 s: the call ends
    // before the request's deadline (less a twentieth of what is left), so
    // the answer is the agent's 504, counted as an agent timeout, not the
    // request's 408.
    let app = spawn_app_with("[server]\nrequest_timeout = \"1s\"\n[agent]\necho_latency = \"3s\"").await;
    app.expect_failures();
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    let body = assert_problem(
        app.post(&alice, &q, json!({"input": "hi"})).await,
        StatusCode::GATEWAY_TIMEOUT,
        "UPSTREAM_TIMEOUT",
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    let ms: u64 = detail
        .strip_prefix("the agent did not answer within ")
        .unwrap()
        .strip_suffix(" ms")
        .unwrap()
        .parse()
        .unwrap();
    // What was left of the 1 s, less a twentieth: under 950 ms however long
    // the request took to get there (a loaded machine can take a while).
    assert!((1..=950).contains(&ms), "{detail}");
    assert_eq!(
        app.metric(r#"sessiongate_agent_query_duration_seconds_count{tool_set="general",outcome="timeout"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn with_cors_on_a_408_still_carries_the_cors_headers() {
    // A browser can only read an answer that carries them: the timeout must
    // run inside the CORS layer, not around it.
    let app = spawn_app_with(
        "[server]\nrequest_timeout = \"100ms\"\ncors_allowed_origins = [\"https://app.example.com\"]",
    )
    .await;
    let answer = stalled_create(&app, &token("alice"), "Origin: https://app.example.com\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("access-control-allow-origin: https://app.example.com"), "{answer}");
    assert!(head.contains("x-request-id: "), "{answer}");
    assert!(answer.contains("\"code\":\"REQUEST_TIMEOUT\""), "{answer}");
}

#[tokio::test]
async fn with_cors_on_a_401_carries_the_cors_headers_and_a_preflight_needs_no_token() {
    // The gate runs inside CORS: a browser can read why it was refused.
    let app = spawn_app_with(
        "[server]\ncors_allowed_origins = [\"https://app.example.com\"]\n\
         [[rate_limit.policies]]\nname = \"default\"\nlimit = 2\nwindow = \"60s\"",
    )
    .await;
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(r.headers().contains_key("x-request-id"));
    // What a browser's script may read: the quota, the wait, the challenge.
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    for name in ["retry-after", "ratelimit", "ratelimit-policy", "www-authenticate", "x-request-id"] {
        assert!(exposed.split(',').any(|h| h.trim() == name), "{name} not in {exposed}");
    }
    assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/sessions/0190f7d2-0000-7000-8000-000000000000"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    // An admitted request through the same stack is answered in full, and a
    // refused one carries the CORS headers too.
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    let get =
        || app.client.get(app.url(&path)).bearer_auth(&alice).header("origin", "https://app.example.com");
    let r = get().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["ratelimit-policy"], r#""default";q=2;w=60"#);
    let r = get().send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123.x:y").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123.x:y");
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(generated, "bad id with spaces");
    assert!(uuid::Uuid::parse_str(&generated).is_ok());
    let r = app.client.get(app.url("/nope")).header("x-request-id", "trace-me").send().await.unwrap();
    let body = assert_problem(r, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(body["request_id"], "trace-me");
}

#[tokio::test]
async fn a_request_the_client_abandons_is_counted_as_499_and_leaves_the_gauge() {
    let app = spawn_app_with("[agent]\necho_latency = \"10s\"").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    app.abandon(app.client.post(app.url(&q)).bearer_auth(&alice).json(&json!({"input": "hi"})), "POST").await;
    let active = r#"http_server_active_requests{http_request_method="POST"}"#;
    let abandoned = r#"http_server_request_duration_seconds_count{http_request_method="POST",http_route="/v1/sessions/{id}/queries",http_response_status_code="499"}"#;
    let settled = eventually(Duration::from_secs(5), || async {
        app.metric(active).await == Some(0.0) && app.metric(abandoned).await == Some(1.0)
    })
    .await;
    assert!(
        settled,
        "in flight: {:?}, abandoned: {:?}",
        app.metric(active).await,
        app.metric(abandoned).await
    );
}
