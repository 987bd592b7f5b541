//! `spawn_app()`: a real sessiongate on port 0 with an injected clock, and
//! typed request helpers. Logs only when `TEST_LOG` is set.

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sessiongate::clock::{Clock, ManualClock};
use sessiongate::config::{Config, Secret};
use sessiongate::startup::{Application, BuildOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "sessiongate-test";
/// 2026-11-25T10:00:00Z: tests start every clock here.
pub const T0: i64 = 1_795_600_800_000;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub clock: ManualClock,
    /// Set by `expect_failures`: 502, 503 and 504 answers are then expected.
    failures_expected: std::sync::atomic::AtomicBool,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The base test configuration; `extra` is TOML merged over it.
pub fn test_config(extra: &str) -> Config {
    let base = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
hs256_secret = "{SECRET}"
leeway = "0s"
[sessions]
reaper_interval = "1h"
[rate_limit]
policies = []
per_ip = {{ per_second = 0, burst = 1 }}
[telemetry]
log_level = "debug"
"#
    );
    let merged = merge_toml(&base, extra);
    Config::from_toml(&merged).expect("test config is valid")
}

fn merge_toml(base: &str, extra: &str) -> String {
    let mut a: toml::Table = base.parse().expect("base toml");
    let b: toml::Table = extra.parse().expect("extra toml");
    fn merge(a: &mut toml::Table, b: toml::Table) {
        for (k, v) in b {
            match (a.get_mut(&k), v) {
                (Some(toml::Value::Table(at)), toml::Value::Table(bt)) => merge(at, bt),
                (_, v) => {
                    a.insert(k, v);
                }
            }
        }
    }
    merge(&mut a, b);
    toml::to_string(&a).expect("render toml")
}

fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some()
        && let Ok(guard) = sessiongate::telemetry::init(&Default::default())
    {
        // Tests end by exiting; keep the writer alive to the end.
        std::mem::forget(guard);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(extra: &str) -> TestApp {
    spawn_config(test_config(extra)).await
}

/// A server from a complete configuration, on the test clock.
pub async fn spawn_config(config: Config) -> TestApp {
    let clock = ManualClock::new(T0);
    spawn_config_on(config, clock.clone(), Arc::new(clock)).await
}

/// A server on `clock`; `manual` becomes the `TestApp`'s `clock` (moving it
/// moves the server's time only when `clock` reads it).
pub async fn spawn_config_on(config: Config, manual: ManualClock, clock: Arc<dyn Clock>) -> TestApp {
    init_test_logging();
    let clock_field = manual;
    let app = Application::build(config, BuildOptions { production: true, clock: Some(clock) })
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        client: client(),
        clock: clock_field,
        failures_expected: Default::default(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// A plain HTTP client for talking to test servers.
pub fn client() -> Client {
    sessiongate::net::init_tls();
    Client::new()
}

pub fn token(sub: &str) -> String {
    token_with(sub, &[], Duration::from_secs(600))
}

pub fn admin_token(sub: &str) -> String {
    token_with(sub, &["admin"], Duration::from_secs(600))
}

pub fn token_with(sub: &str, roles: &[&str], ttl: Duration) -> String {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    sessiongate::auth::mint_token(&Secret::new(SECRET), ISSUER, AUDIENCE, sub, &roles, ttl).expect("mint")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// This test provokes failures (a failing or hung agent, a dead or
    /// stalled Redis): the helpers below then let 502, 503 and 504 through.
    /// A 500 is never expected.
    pub fn expect_failures(&self) {
        self.failures_expected.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every 5xx in a test is a bug, unless the test provokes it.
    fn checked(&self, r: Response, method: &str, path: &str) -> Response {
        let status = r.status();
        let expected = self.failures_expected.load(std::sync::atomic::Ordering::Relaxed)
            && status != StatusCode::INTERNAL_SERVER_ERROR;
        assert!(
            !status.is_server_error() || expected,
            "{status} from {method} {path}: every 5xx in a test is a bug (a test that provokes one calls expect_failures)"
        );
        r
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        let r = self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request");
        self.checked(r, "GET", path)
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Response {
        let r =
            self.client.post(self.url(path)).bearer_auth(token).json(&body).send().await.expect("request");
        self.checked(r, "POST", path)
    }

    pub async fn patch(&self, token: &str, path: &str, body: Value) -> Response {
        let r =
            self.client.patch(self.url(path)).bearer_auth(token).json(&body).send().await.expect("request");
        self.checked(r, "PATCH", path)
    }

    pub async fn delete(&self, token: &str, path: &str) -> Response {
        let r = self.client.delete(self.url(path)).bearer_auth(token).send().await.expect("request");
        self.checked(r, "DELETE", path)
    }

    pub async fn create(&self, token: &str, tool_set: &str) -> Response {
        self.post(token, "/v1/sessions", json!({ "tool_set": tool_set })).await
    }

    /// Create and return the session body, asserting 201.
    pub async fn create_ok(&self, token: &str, tool_set: &str) -> Value {
        let r = self.create(token, tool_set).await;
        assert_eq!(r.status(), StatusCode::CREATED, "create failed");
        r.json().await.expect("json")
    }

    pub async fn live_ids(&self, token: &str) -> Vec<String> {
        let r = self.get(token, "/v1/sessions").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        body["sessions"]
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Send `request`, and go away once the server has it in flight (its
    /// `http_server_active_requests{method}` rose): a client that gives up
    /// mid-request, whatever the machine's speed. (Not for a request the
    /// server answers at once: it must still be in flight when looked for.)
    pub async fn abandon(&self, request: reqwest::RequestBuilder, method: &str) {
        let series = format!(r#"http_server_active_requests{{http_request_method="{method}"}}"#);
        let before = self.metric(&series).await.unwrap_or(0.0);
        let task = tokio::spawn(request.send());
        let in_flight = eventually(Duration::from_secs(10), || async {
            self.metric(&series).await.unwrap_or(0.0) > before
        })
        .await;
        task.abort();
        let _ = task.await;
        assert!(in_flight, "the {method} never reached the server");
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
    }

    /// The value of one sample line, e.g. `sessiongate_sessions_ended_total{reason="expired"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Signal shutdown and wait for the server to finish draining.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("running").await.expect("join")
    }

    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Poll `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Assert a problem+json response with this status and code; returns the body.
pub async fn assert_problem(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "status");
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct.as_deref(), Some("application/problem+json"), "content type");
    let request_id = r.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status.as_u16(), "status in {body}");
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(), "{body}");
    assert_eq!(body["request_id"].as_str(), request_id.as_deref(), "request_id matches header");
    body
}

/// Send `request`, bytes as given, on a new connection to `addr`, and read
/// the answer: its head and as much of its body as its `Content-Length` says
/// (or until the server closes, or 5 s pass). For what reqwest will not send:
/// chunked bodies, bodies that stop arriving.
pub async fn raw_exchange(addr: SocketAddr, request: String) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&answer).to_string()
    })
    .await
    .unwrap()
}
