//! Graceful shutdown: stop accepting, fail readiness, finish what is in flight.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn in_flight_requests_finish_after_shutdown_is_signalled() {
    let mut app = spawn_app_with("[agent]\necho_latency = \"400ms\"").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = app
        .client
        .post(app.url(&format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap())))
        .bearer_auth(&alice)
        .json(&json!({"input": "slow"}))
        .send();
    let in_flight = tokio::spawn(q);
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.signal_shutdown();
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the in-flight query completed");
    let addr = app.addr;
    app.stop().await.expect("clean stop");
    assert!(client().get(format!("http://{addr}/healthz")).send().await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn readiness_reports_ready_until_shutdown() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ready");
    app.stop().await.expect("clean stop");
}
