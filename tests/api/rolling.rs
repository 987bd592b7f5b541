//! A rolling restart under load: two replicas on one Redis behind a
//! health-checking balancer (as a load balancer or a Kubernetes Service
//! does it: route only to replicas whose `/readyz` answers 200). Each replica
//! in turn gets SIGTERM and is replaced, while clients run the frontend
//! journey without pause. Not one request may fail.
//!
//! What makes it work: on SIGTERM `/readyz` fails at once while requests are
//! still served for `server.shutdown_delay`; the balancer stops routing to the
//! replica well before it stops accepting; in-flight requests drain; sessions
//! live in Redis, so any replica serves any of them.

use crate::helpers::*;
use crate::process::SgProcess;
use crate::redis_server::RedisServer;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The balancer's view: every replica it knows, and those that are ready.
#[derive(Clone, Default)]
struct Balancer {
    known: Arc<Mutex<Vec<String>>>,
    ready: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicUsize>,
}

impl Balancer {
    fn add(&self, base: &str) {
        self.known.lock().unwrap().push(base.to_string());
    }

    fn remove(&self, base: &str) {
        self.known.lock().unwrap().retain(|b| b != base);
        self.ready.lock().unwrap().retain(|b| b != base);
    }

    fn pick(&self) -> Option<String> {
        let ready = self.ready.lock().unwrap();
        (!ready.is_empty()).then(|| ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone())
    }

    /// Health checks every 100 ms, like a load balancer's.
    async fn run_health_checks(self, stop: Arc<AtomicBool>) {
        let client = Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
        while !stop.load(Ordering::Relaxed) {
            let known = self.known.lock().unwrap().clone();
            let mut ready = Vec::new();
            for base in known {
                if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                    ready.push(base);
                }
            }
            *self.ready.lock().unwrap() = ready;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&self, base: &str) {
        assert!(
            eventually(Duration::from_secs(10), || async {
                self.ready.lock().unwrap().iter().any(|b| b == base)
            })
            .await,
            "{base} never became ready"
        );
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// One client of the balancer, as one user.
struct LbClient {
    lb: Balancer,
    http: Client,
    tally: Arc<Tally>,
    token: String,
}

impl LbClient {
    /// One request through the balancer; `None` (and a recorded failure)
    /// unless the answer has the expected status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Option<reqwest::Response> {
        let Some(base) = self.lb.pick() else {
            self.tally.fail(format!("{method} {path}: no replica ready"));
            return None;
        };
        let mut r = self.http.request(method.clone(), format!("{base}{path}")).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        match r.send().await {
            Ok(resp) if resp.status() == expect => {
                self.tally.ok.fetch_add(1, Ordering::Relaxed);
                Some(resp)
            }
            Ok(resp) => {
                self.tally.fail(format!("{method} {path} via {base}: {}", resp.status()));
                None
            }
            Err(e) => {
                self.tally.fail(format!("{method} {path} via {base}: {e}"));
                None
            }
        }
    }
}

/// The frontend journey, over and over: create, read, query, switch tool
/// set, heartbeat, delete.
async fn journey_loop(lb: Balancer, tally: Arc<Tally>, stop: Arc<AtomicBool>, user: String) {
    let c = LbClient { lb, http: Client::new(), tally, token: token(&user) };
    while !stop.load(Ordering::Relaxed) {
        let create = Some(json!({"tool_set": "general"}));
        let Some(created) = c.send(Method::POST, "/v1/sessions", create, StatusCode::CREATED).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let path = format!("/v1/sessions/{id}");
        c.send(Method::GET, &path, None, StatusCode::OK).await;
        c.send(Method::POST, &format!("{path}/queries"), Some(json!({"input": "hello"})), StatusCode::OK)
            .await;
        c.send(Method::PATCH, &path, Some(json!({"tool_set": "coding"})), StatusCode::OK).await;
        c.send(Method::POST, &format!("{path}/heartbeat"), Some(json!({})), StatusCode::OK).await;
        c.send(Method::DELETE, &path, None, StatusCode::NO_CONTENT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    sessiongate::net::init_tls();
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("SESSIONGATE__STORE__BACKEND", "redis"),
        ("SESSIONGATE__STORE__REDIS_URL", url.as_str()),
        ("SESSIONGATE__STORE__KEY_PREFIX", "rolling"),
        // Room for the balancer's 100 ms checks to see readiness fail on a
        // loaded machine (a Kubernetes probe period is seconds, not this).
        ("SESSIONGATE__SERVER__SHUTDOWN_DELAY", "3s"),
        ("SESSIONGATE__SERVER__SHUTDOWN_GRACE", "10s"),
        ("SESSIONGATE__SESSIONS__MAX_PER_USER", "100"),
        // Limits are not what this test is about.
        ("SESSIONGATE__RATE_LIMIT__PER_IP", "{per_second=0,burst=1}"),
        ("SESSIONGATE__RATE_LIMIT__POLICIES", "[]"),
    ];
    let lb = Balancer::default();
    let stop = Arc::new(AtomicBool::new(false));
    let checks = tokio::spawn(lb.clone().run_health_checks(stop.clone()));
    let mut replicas = vec![SgProcess::start(&env), SgProcess::start(&env)];
    for r in &replicas {
        lb.add(&r.base);
        lb.wait_ready(&r.base).await;
    }

    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..6)
        .map(|i| tokio::spawn(journey_loop(lb.clone(), tally.clone(), stop.clone(), format!("roller-{i}"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Replace each replica in turn, as a rolling update does.
    for _ in 0..2 {
        let mut old = replicas.remove(0);
        let before = tally.ok.load(Ordering::Relaxed);
        old.sigterm();
        old.wait_for_clean_exit(Duration::from_secs(20)).await;
        lb.remove(&old.base);
        let log = old.log_lines();
        assert!(log.iter().any(|l| l["event"] == "stopped"), "a clean stop was logged");
        // (Start blocks until it listens: off the two workers the load runs on.)
        let fresh = tokio::task::block_in_place(|| SgProcess::start(&env));
        lb.add(&fresh.base);
        lb.wait_ready(&fresh.base).await;
        replicas.push(fresh);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            tally.ok.load(Ordering::Relaxed) > before,
            "traffic kept flowing during the restart; failures: {:?}",
            tally.failures.lock().unwrap().iter().take(5).collect::<Vec<_>>()
        );
    }

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    checks.await.unwrap();
    let failures = tally.failures.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}",
        failures.len(),
        ok + failures.len(),
        failures.join("\n")
    );
    assert!(ok > 200, "only {ok} requests made it: not much of a load");
}
