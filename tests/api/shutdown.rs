//! Graceful shutdown: stop accepting, fail readiness, finish what is in flight.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn in_flight_requests_finish_after_shutdown_is_signalled() {
    let mut app = spawn_app_with("[agent]\necho_latency = \"1s\"").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = app
        .client
        .post(app.url(&format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap())))
        .bearer_auth(&alice)
        .json(&json!({"input": "slow"}))
        .send();
    let in_flight = tokio::spawn(q);
    let posts = r#"http_server_active_requests{http_request_method="POST"}"#;
    assert!(eventually(Duration::from_secs(10), || async { app.metric(posts).await == Some(1.0) }).await);
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

/// A connection with no request in flight does not hold up the shutdown:
/// one that has sent nothing yet or half a first head (which hyper alone
/// would keep up to `header_read_timeout`), and a kept-alive one, idle or
/// half-way through its next head, are all closed at once.
#[tokio::test]
async fn connections_without_a_request_in_flight_do_not_delay_shutdown() {
    use std::io::{Read, Write};
    let app = spawn_app().await;
    let addr = app.addr;
    let open = |bytes: &'static [u8]| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(bytes).unwrap();
        s
    };
    const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    const HALF: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut conns = vec![("silent", open(b"")), ("half a first head", open(HALF))];
    for (what, then) in [("kept alive, idle", &b""[..]), ("kept alive, half the next head", HALF)] {
        let mut s = open(REQUEST);
        // Blocking reads off the runtime the server runs on.
        let s = tokio::task::spawn_blocking(move || {
            let mut answer = [0u8; 1024];
            let n = s.read(&mut answer).unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{what}");
            s.write_all(then).unwrap();
            s
        })
        .await
        .unwrap();
        conns.push((what, s));
    }
    // All of them are being served before the stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    app.stop().await.expect("clean stop");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown waited {took:?} (the header deadline is 10 s)");
    for (what, mut s) in conns {
        let read = tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).map(|_| rest)
        })
        .await
        .unwrap();
        assert!(read.is_ok_and(|r| r.is_empty() || r.starts_with(b"HTTP/1.1 408")), "{what}: closed");
    }
}

/// A request still running when `shutdown_grace` is over is dropped then,
/// and counted and logged as a 499 before the process ends, not lost with
/// the runtime after its logs and metrics have stopped.
#[tokio::test]
async fn a_request_still_running_when_the_grace_ends_is_logged_as_499() {
    let mut p = crate::process::SgProcess::start(&[
        ("SESSIONGATE__AGENT__ECHO_LATENCY", "20s"),
        ("SESSIONGATE__SERVER__SHUTDOWN_DELAY", "0s"),
        ("SESSIONGATE__SERVER__SHUTDOWN_GRACE", "300ms"),
    ]);
    let (c, alice) = (client(), token("alice"));
    let r = c.post(p.url("/v1/sessions")).bearer_auth(&alice).json(&json!({"tool_set": "general"})).send();
    let s: serde_json::Value = r.await.unwrap().json().await.unwrap();
    let q = c
        .post(p.url(&format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap())))
        .bearer_auth(&alice)
        .json(&json!({"input": "slow"}))
        .send();
    let in_flight = tokio::spawn(q);
    let posts = r#"http_server_active_requests{http_request_method="POST"} 1"#;
    let seen = eventually(Duration::from_secs(10), || async {
        let m = c.get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
        m.lines().any(|l| l == posts)
    })
    .await;
    assert!(seen, "the query is in flight");
    let signalled = std::time::Instant::now();
    p.sigterm();
    assert!(in_flight.await.unwrap().is_err(), "the query was cut off, not answered");
    p.wait_for_clean_exit(Duration::from_secs(10)).await;
    assert!(signalled.elapsed() < Duration::from_secs(5), "the 20 s query was not waited for");
    let logs = p.log_lines();
    let cut = logs
        .iter()
        .find(|l| l["message"] == "request" && l["http.route"] == "/v1/sessions/{id}/queries")
        .unwrap_or_else(|| panic!("no access line for the query: {logs:#?}"));
    assert_eq!(cut["http.response.status_code"], 499);
    assert!(logs.iter().any(|l| l["event"] == "stopped"), "a clean stop was logged");
}
