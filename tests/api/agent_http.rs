//! The `http` agent against a misbehaving upstream (a test server): each way
//! it can fail is a 502 or a 504 within the timeout, counted by outcome, with
//! the upstream's words kept out of the answer; a good upstream gets the
//! documented request body.

use crate::helpers::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routes: /ok (echoes, records the body), /hang, /fail, /garbage, /huge, /redirect.
async fn upstream(seen: Arc<Mutex<Vec<Value>>>) -> String {
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::post(move |body: axum::Json<Value>| async move {
                seen.lock().unwrap().push(body.0.clone());
                axum::Json(json!({"output": format!("ok: {}", body["input"].as_str().unwrap_or(""))}))
            }),
        )
        .route(
            "/hang",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .route(
            "/fail",
            axum::routing::post(|| async {
                (AxStatus::SERVICE_UNAVAILABLE, "secret internal detail").into_response()
            }),
        )
        .route("/garbage", axum::routing::post(|| async { "<html>not json</html>" }))
        .route(
            "/huge",
            axum::routing::post(|| async { format!("{{\"output\": \"{}\"}}", "x".repeat(2 << 20)) }),
        )
        .route(
            "/redirect",
            axum::routing::post(|| async {
                (AxStatus::TEMPORARY_REDIRECT, [("location", "http://127.0.0.1:9/elsewhere")]).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An app whose agent is at `url`, with a timeout roomy enough for a loaded
/// machine (the hanging case sets its own, short one).
async fn app_for(url: &str) -> TestApp {
    app_with_timeout(url, "10s").await
}

async fn app_with_timeout(url: &str, timeout: &str) -> TestApp {
    spawn_app_with(&format!("[agent]\nkind = \"http\"\nurl = \"{url}\"\ntimeout = \"{timeout}\"")).await
}

async fn ask(app: &TestApp) -> reqwest::Response {
    let alice = token("alice");
    let s = app.create_ok(&alice, "research").await;
    app.post(&alice, &format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap()), json!({"input": "why?"}))
        .await
}

#[tokio::test]
async fn a_good_upstream_gets_the_session_context_and_answers() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let base = upstream(seen.clone()).await;
    let app = app_for(&format!("{base}/ok")).await;
    let r = ask(&app).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["output"], "ok: why?");
    let sent = seen.lock().unwrap()[0].clone();
    assert_eq!(sent["user_id"], "alice");
    assert_eq!(sent["tool_set"], "research");
    assert_eq!(sent["tools"], json!(["search", "browser", "summarize"]));
    assert_eq!(sent["turn"], 1);
    assert_eq!(sent["input"], "why?");
    assert_eq!(sent["session_id"], body["session_id"]);
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_within_the_timeout() {
    let base = upstream(Arc::default()).await;
    let app = app_with_timeout(&format!("{base}/hang"), "300ms").await;
    app.expect_failures();
    let started = Instant::now();
    assert_problem(ask(&app).await, StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT").await;
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by agent.timeout: {:?}", started.elapsed());
    let timeouts = r#"sessiongate_agent_query_duration_seconds_count{tool_set="research",outcome="timeout"}"#;
    assert_eq!(app.metric(timeouts).await, Some(1.0));
}

#[tokio::test]
async fn every_upstream_failure_is_a_502_that_leaks_nothing() {
    let base = upstream(Arc::default()).await;
    for path in ["/fail", "/garbage", "/huge", "/redirect"] {
        let app = app_for(&format!("{base}{path}")).await;
        app.expect_failures();
        let body = assert_problem(ask(&app).await, StatusCode::BAD_GATEWAY, "UPSTREAM_ERROR").await;
        let text = body.to_string();
        for leak in ["secret internal detail", "html", "127.0.0.1", "xxxx", "elsewhere"] {
            assert!(!text.contains(leak), "{path}: {leak:?} leaked into {text}");
        }
        let errors = r#"sessiongate_agent_query_duration_seconds_count{tool_set="research",outcome="error"}"#;
        assert_eq!(app.metric(errors).await, Some(1.0), "{path}");
    }
    // Nothing listening at all.
    let app = app_for("http://127.0.0.1:9/agent").await;
    app.expect_failures();
    assert_problem(ask(&app).await, StatusCode::BAD_GATEWAY, "UPSTREAM_ERROR").await;
}

#[test]
fn the_http_agent_needs_a_usable_url() {
    for (url, ok) in [
        ("", false),
        ("ftp://agent.internal/", false),
        ("http://user:pw@agent.internal/", false),
        ("not a url", false),
        ("http://agent.internal:8000/v1/answer", true),
        ("https://agent.example.com/", true),
    ] {
        let toml =
            format!("[auth]\nhs256_secret = \"{SECRET}\"\n[agent]\nkind = \"http\"\nurl = \"{url}\"\n");
        let result = sessiongate::config::Config::from_toml(&toml);
        assert_eq!(result.is_ok(), ok, "{url}: {result:?}");
        if let Err(e) = result {
            assert!(e.to_string().contains("agent.url"), "{e}");
        }
    }
}
