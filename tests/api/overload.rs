//! `server.max_in_flight`: past it a request is refused at once with
//! `503 OVERLOADED`, never queued; probes and `/metrics` are never refused.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_in_flight_requests_are_refused_at_once_and_probes_never() {
    let app = Arc::new(spawn_app_with("[server]\nmax_in_flight = 4\n[agent]\necho_latency = \"1s\"").await);
    let mut users = Vec::new();
    for i in 0..8 {
        let t = token(&format!("flood-{i}"));
        let id = app.create_ok(&t, "general").await["id"].as_str().unwrap().to_owned();
        users.push((t, id));
    }
    app.expect_failures();
    let started = Instant::now();
    let queries: Vec<_> = users
        .iter()
        .cloned()
        .map(|(t, id)| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = app.post(&t, &format!("/v1/sessions/{id}/queries"), json!({"input": "hold"})).await;
                let took = started.elapsed();
                let status = r.status();
                let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let body: serde_json::Value = r.json().await.unwrap();
                (status, body["code"].as_str().unwrap_or("").to_owned(), retry_after, took)
            })
        })
        .collect();
    // During the flood, the probes and the metrics answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} during the flood");
    }
    let mut served = 0;
    let mut shed = 0;
    for q in queries {
        let (status, code, retry_after, took) = q.await.unwrap();
        match status {
            StatusCode::OK => {
                served += 1;
                assert!(took >= Duration::from_secs(1), "a served query did its work: {took:?}");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                assert_eq!(code, "OVERLOADED");
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert!(took < Duration::from_millis(500), "refused at once, not queued: {took:?}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((served, shed), (4, 4), "four in flight, four refused");
    assert_eq!(app.metric("sessiongate_requests_shed_total").await, Some(4.0));
    // The places are given back: the next query is served.
    let (t, id) = &users[0];
    let r = app.post(t, &format!("/v1/sessions/{id}/queries"), json!({"input": "again"})).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_past_max_connections_wait_and_are_served_when_one_closes() {
    let app = spawn_app_with("[server]\nmax_connections = 1").await;
    // One idle keep-alive connection holds the only place.
    let first = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let second = tokio::spawn({
        let addr = app.addr;
        async move {
            raw_exchange(addr, "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into()).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second connection waits in the backlog");
    drop(first);
    let answer =
        tokio::time::timeout(Duration::from_secs(5), second).await.expect("served once the first closed");
    assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
}

/// A browser can read the refusal: it carries the CORS headers, and
/// `Retry-After` is exposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_answer_carries_the_cors_headers() {
    let origin = "https://app.example";
    let app = Arc::new(
        spawn_app_with(&format!(
            "[server]\nmax_in_flight = 1\ncors_allowed_origins = [{origin:?}]\n[agent]\necho_latency = \"1s\""
        ))
        .await,
    );
    let t = token("browser");
    let id = app.create_ok(&t, "general").await["id"].as_str().unwrap().to_owned();
    app.expect_failures();
    let held = tokio::spawn({
        let (app, t, id) = (app.clone(), t.clone(), id.clone());
        async move { app.post(&t, &format!("/v1/sessions/{id}/queries"), json!({"input": "hold"})).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app
        .client
        .get(app.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(&t)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED").await;
    assert_eq!(held.await.unwrap(), StatusCode::OK);
}
