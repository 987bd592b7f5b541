//! Dependency faults under load: a stalled Redis (SIGSTOP: connections open,
//! nothing answers) must give bounded latency and a clear 503, never a
//! pile-up of waiting requests, and recovery without a restart; a Redis
//! killed and restarted mid-load likewise.

use crate::helpers::*;
use crate::redis_server::RedisServer;
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const COMMAND_TIMEOUT_MS: u64 = 250;

async fn app_on(redis: &RedisServer) -> TestApp {
    spawn_app_with(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"faults\"\ncommand_timeout = \"{COMMAND_TIMEOUT_MS}ms\"",
        redis.url()
    ))
    .await
}

#[derive(Default)]
struct Outcomes {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    slowest_ms: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
}

/// `/readyz` says the store is up within `timeout`.
async fn ready_within(app: &TestApp, timeout: Duration) -> bool {
    eventually(timeout, || async {
        let Ok(r) = app.client.get(app.url("/readyz")).send().await else { return false };
        r.status() == StatusCode::OK
            && r.json::<serde_json::Value>().await.is_ok_and(|body| body["store"] == "up")
    })
    .await
}

/// One session each for `n` users, made while the store is healthy (ready:
/// connected to Redis, so the first create does not also pay for connecting
/// within the short command timeout).
async fn sessions(app: &TestApp, n: usize) -> Vec<(String, String)> {
    assert!(ready_within(app, Duration::from_secs(10)).await, "ready before the load");
    let mut out = Vec::new();
    for i in 0..n {
        let user = token(&format!("load-{i}"));
        let s = app.create_ok(&user, "general").await;
        out.push((user, s["id"].as_str().unwrap().to_string()));
    }
    out
}

/// One loop of reads per session, until `stop`.
fn load(
    app: &TestApp,
    sessions: &[(String, String)],
    stop: Arc<AtomicBool>,
    out: Arc<Outcomes>,
) -> Vec<tokio::task::JoinHandle<()>> {
    sessions
        .iter()
        .cloned()
        .map(|(user, id)| {
            let (client, base) = (app.client.clone(), app.url(""));
            let (stop, out) = (stop.clone(), out.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = client.get(format!("{base}/v1/sessions/{id}")).bearer_auth(&user).send().await;
                    let ms = started.elapsed().as_millis() as usize;
                    out.slowest_ms.fetch_max(ms, Ordering::Relaxed);
                    match r.map(|r| r.status()) {
                        Ok(StatusCode::OK) => out.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                            out.unavailable.fetch_add(1, Ordering::Relaxed)
                        }
                        other => {
                            out.other.lock().unwrap().push(format!("{other:?}"));
                            0
                        }
                    };
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_under_load_is_a_bounded_503_with_no_pile_up() {
    let redis = RedisServer::start();
    let app = app_on(&redis).await;
    let clients = sessions(&app, 8).await;
    let stop = Arc::new(AtomicBool::new(false));
    let before = Arc::new(Outcomes::default());
    let workers = load(&app, &clients, stop.clone(), before.clone());
    let baseline =
        eventually(Duration::from_secs(10), || async { before.ok.load(Ordering::Relaxed) > 50 }).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(baseline, "a baseline of successes");

    // Stall Redis for four seconds under the same load.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(Outcomes::default());
    redis.pause();
    let workers = load(&app, &clients, stop.clone(), during.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let in_flight = app.metric(r#"http_server_active_requests{http_request_method="GET"}"#).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    redis.resume();

    assert!(during.other.lock().unwrap().is_empty(), "only 200 or 503: {:?}", during.other.lock().unwrap());
    let unavailable = during.unavailable.load(Ordering::Relaxed);
    assert!(unavailable >= 8, "the stall was answered with 503s ({unavailable})");
    let slowest = during.slowest_ms.load(Ordering::Relaxed) as u64;
    // Bounded by command_timeout (250 ms, twice for a request's two calls),
    // not by the stall: an unbounded request would wait the 4 s out. The
    // margin is for a loaded machine; this is not a timing test.
    assert!(slowest < 3_000, "latency bounded by command_timeout, not the stall: slowest {slowest} ms");
    // No pile-up: at most one request per client was waiting (plus the
    // metrics scrape itself, which is a GET too).
    assert!(in_flight <= 9.0, "{in_flight} requests in flight with 8 clients");

    // Recovery without a restart.
    assert!(ready_within(&app, Duration::from_secs(10)).await, "ready again after Redis resumed");
    let stop = Arc::new(AtomicBool::new(false));
    let after = Arc::new(Outcomes::default());
    let workers = load(&app, &clients[..4], stop.clone(), after.clone());
    let recovered =
        eventually(Duration::from_secs(10), || async { after.ok.load(Ordering::Relaxed) > 20 }).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(recovered && after.unavailable.load(Ordering::Relaxed) == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_load_recovers_by_itself() {
    let mut redis = RedisServer::start_persistent();
    let app = app_on(&redis).await;
    let clients = sessions(&app, 6).await;
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Outcomes::default());
    let workers = load(&app, &clients, stop.clone(), out.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = out.unavailable.load(Ordering::Relaxed);
    redis.restart();
    let ok_at_restart = out.ok.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), || async { out.ok.load(Ordering::Relaxed) > ok_at_restart + 50 })
            .await,
        "successes resume after the restart"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(during > 0, "the outage was visible as 503s");
    assert!(out.other.lock().unwrap().is_empty(), "only 200 or 503: {:?}", out.other.lock().unwrap());
    assert!((out.slowest_ms.load(Ordering::Relaxed) as u64) < 2 * COMMAND_TIMEOUT_MS + 1000);
}
