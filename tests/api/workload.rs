//! A scripted workload that moves every series of the metrics catalog: used
//! by the exposition test (every metric present, `promtool check metrics`
//! clean) and by the Prometheus end-to-end test (every dashboard query has
//! data, the alerts fire).
//!
//! The app runs in-process on its own redis-server, with both rate-limit
//! layers on. Requests carry a fresh `X-Forwarded-For` each (loopback is a
//! trusted proxy), so only the deliberate flood meets the per-IP limit.

use crate::helpers::*;
use crate::redis_server::RedisServer;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Workload {
    pub app: TestApp,
    pub redis: RedisServer,
    next_ip: AtomicU32,
    round: AtomicU32,
}

/// Sessions idle for this long expire; each round moves the test clock past it.
const IDLE_TTL_SECS: u64 = 30;
/// A long-lived token: the test clock moves forward a little every round.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Workload {
    pub async fn start() -> Workload {
        let redis = RedisServer::start();
        let config = test_config(&format!(
            r#"
[server]
trusted_proxies = ["127.0.0.1/32"]
[store]
backend = "redis"
redis_url = "{url}"
key_prefix = "wl"
command_timeout = "300ms"
[sessions]
max_per_user = 2
idle_ttl = "{IDLE_TTL_SECS}s"
reaper_interval = "50ms"
[rate_limit]
on_store_error = "allow"
per_ip = {{ per_second = 2, burst = 5 }}
[[rate_limit.policies]]
name = "default"
limit = 100000
window = "60s"
[[rate_limit.policies]]
name = "session-create"
limit = 6
window = "60s"
routes = ["POST /v1/sessions"]
[[rate_limit.policies]]
name = "catalog-shadow"
limit = 1
window = "60s"
shadow = true
routes = ["GET /v1/tool-sets"]
[[rate_limit.policies]]
name = "queries-in-flight"
kind = "concurrency"
limit = 4
routes = ["POST /v1/sessions/{{id}}/queries"]
[telemetry]
log_level = "warn"
"#,
            url = redis.url()
        ));
        let app = spawn_config(config).await;
        Workload { app, redis, next_ip: AtomicU32::new(1), round: AtomicU32::new(0) }
    }

    /// A request from a client address never seen before.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        self.app
            .client
            .request(method, self.app.url(path))
            .header("x-forwarded-for", format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255))
    }

    async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> StatusCode {
        let mut r = self.req(method, path);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let status = r.send().await.expect("request").status();
        assert!(!status.is_server_error(), "{status} from {path}: every 5xx in a test is a bug");
        status
    }

    /// One pass that moves every series except the store's failures (see
    /// `break_the_store`). Users are fresh per round, so rounds repeat.
    pub async fn round(&self) {
        use Method as M;
        let round = self.round.fetch_add(1, Ordering::Relaxed);
        let user = token_with(&format!("wl-user-{round}"), &[], TOKEN_TTL);
        let admin = token_with("wl-admin", &["admin"], TOKEN_TTL);

        // Successes: create, read, list, heartbeat, query, migrate.
        let s = self.create(&user, "general").await;
        let path = format!("/v1/sessions/{s}");
        assert_eq!(self.send(M::GET, &path, Some(&user), None).await, StatusCode::OK);
        assert_eq!(self.send(M::GET, "/v1/sessions", Some(&user), None).await, StatusCode::OK);
        assert_eq!(
            self.send(M::POST, &format!("{path}/heartbeat"), Some(&user), Some(json!({}))).await,
            StatusCode::OK
        );
        for _ in 0..2 {
            let q = self
                .send(M::POST, &format!("{path}/queries"), Some(&user), Some(json!({"input": "hi"})))
                .await;
            assert_eq!(q, StatusCode::OK);
        }
        let migrated = self.send(M::PATCH, &path, Some(&user), Some(json!({"tool_set": "coding"}))).await;
        assert_eq!(migrated, StatusCode::OK);

        // The cap (2): a third create evicts the least recently active.
        self.create(&user, "general").await;
        self.create(&user, "coding").await;
        // ... and, with `reject` for a moment, a fourth is refused (429, cap).
        let reject = json!({"sessions": {"on_limit": "reject"}});
        assert_eq!(self.send(M::PATCH, "/v1/admin/config", Some(&admin), Some(reject)).await, StatusCode::OK);
        let refused =
            self.req(M::POST, "/v1/sessions").bearer_auth(&user).json(&json!({"tool_set": "general"}));
        let refused = refused.send().await.unwrap();
        assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "MAX_SESSIONS_EXCEEDED").await;
        let back = json!({"sessions": {"on_limit": null}});
        assert_eq!(self.send(M::PATCH, "/v1/admin/config", Some(&admin), Some(back)).await, StatusCode::OK);

        // The session-create policy (6 a minute): a burst of creates meets
        // the rate limit (429, rate), and evicts along the way.
        let burster = token_with(&format!("wl-burst-{round}"), &[], TOKEN_TTL);
        let mut limited = 0;
        for _ in 0..8 {
            if self.send(M::POST, "/v1/sessions", Some(&burster), Some(json!({"tool_set": "general"}))).await
                == StatusCode::TOO_MANY_REQUESTS
            {
                limited += 1;
            }
        }
        assert_eq!(limited, 2, "6 of 8 admitted by the session-create policy");

        // The shadow policy counts without refusing.
        for _ in 0..2 {
            assert_eq!(self.send(M::GET, "/v1/tool-sets", Some(&user), None).await, StatusCode::OK);
        }

        // Auth failures: missing, malformed, bad signature, forbidden.
        assert_eq!(self.send(M::GET, "/v1/sessions", None, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            self.send(M::GET, "/v1/sessions", Some("not-a-jwt"), None).await,
            StatusCode::UNAUTHORIZED
        );
        let forged = forge(&user);
        assert_eq!(self.send(M::GET, "/v1/sessions", Some(&forged), None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(self.send(M::GET, "/v1/admin/sessions", Some(&user), None).await, StatusCode::FORBIDDEN);
        // Unknown route, bad input.
        assert_eq!(self.send(M::GET, "/nowhere", None, None).await, StatusCode::NOT_FOUND);
        let bad = self.send(M::POST, "/v1/sessions", Some(&user), Some(json!({"tool_set": "nope"}))).await;
        assert_eq!(bad, StatusCode::UNPROCESSABLE_ENTITY);

        // A per-IP flood from one address (burst 5).
        let mut per_ip_limited = 0;
        let flood_ip = format!("192.0.2.{}", round % 250 + 1);
        // (Its bucket refills on the real clock, 2/s: a slow machine needs
        // more than eight to get past the burst, so flood until refused.)
        for _ in 0..40 {
            let r = self.app.client.get(self.app.url("/v1/tool-sets")).header("x-forwarded-for", &flood_ip);
            if r.send().await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
                per_ip_limited += 1;
                if per_ip_limited == 2 {
                    break;
                }
            }
        }
        assert!(per_ip_limited >= 2, "the flood met the per-IP limit ({per_ip_limited})");

        // Ends: deleted, revoked; then expired by moving the clock.
        let doomed = self.create(&token_with(&format!("wl-del-{round}"), &[], TOKEN_TTL), "general").await;
        let del_user = token_with(&format!("wl-del-{round}"), &[], TOKEN_TTL);
        assert_eq!(
            self.send(M::DELETE, &format!("/v1/sessions/{doomed}"), Some(&del_user), None).await,
            StatusCode::NO_CONTENT
        );
        self.create(&token_with(&format!("wl-rev-{round}"), &[], TOKEN_TTL), "general").await;
        let revoke = format!("/v1/admin/users/wl-rev-{round}/sessions");
        assert_eq!(self.send(M::DELETE, &revoke, Some(&admin), None).await, StatusCode::OK);
        self.create(&token_with(&format!("wl-exp-{round}"), &[], TOKEN_TTL), "general").await;
        self.app.clock.advance(Duration::from_secs(IDLE_TTL_SECS + 1));
    }

    async fn create(&self, token: &str, tool_set: &str) -> String {
        let r =
            self.req(Method::POST, "/v1/sessions").bearer_auth(token).json(&json!({"tool_set": tool_set}));
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    /// Kill Redis, and make requests that need it: store errors, 503s, the
    /// rate limiter failing open, `sessiongate_store_up` 0.
    pub async fn break_the_store(&mut self) {
        self.redis.kill();
        self.requests_during_the_outage(3).await;
    }

    /// `n` requests that need the store, after `break_the_store`: each is
    /// answered 503 STORE_UNAVAILABLE.
    pub async fn requests_during_the_outage(&self, n: usize) {
        let user = token_with("wl-outage", &[], TOKEN_TTL);
        for _ in 0..n {
            let r = self.req(Method::GET, "/v1/sessions").bearer_auth(&user).send().await.unwrap();
            assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE").await;
        }
    }
}

/// The token with one character of its signature changed.
pub fn forge(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 3;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}
