//! The sliding-window limiters against a reference model: a log of every
//! request each policy counted, from which each check counts the current and
//! previous buckets afresh (no rolling counters, no state but the log), then
//! applies DESIGN.md's rule (`previous × (1 − elapsed/window) + current <
//! limit`, in floating point). Every backend (memory, Redis) is held to it:
//! any policies (windows, limits, shadow or not), any times, any subset of
//! them checked per request (routes with different policies share the
//! principal's key); the same verdicts, spending and counters at every step.

use crate::helpers::T0;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sessiongate::ratelimit::window::Counter;
use sessiongate::ratelimit::{LimiterBackend, WindowCheck, WindowResult};
use sessiongate::store::redis::Redis;
use std::sync::Arc;

/// At least a minute: Redis's TTLs run on its own clock, which hardly moves
/// while the test's jumps by hours.
const WINDOWS: [i64; 3] = [60_000, 600_000, 3_600_000];

/// The requests each policy counted, by its index.
struct Model {
    logs: Vec<Vec<i64>>,
}

impl Model {
    fn check(&mut self, checks: &[WindowCheck], now: i64) -> (bool, Vec<WindowResult>) {
        let seen: Vec<(bool, Counter)> = checks
            .iter()
            .map(|c| {
                let (w, log) = (c.window_ms, &self.logs[c.index]);
                let bucket = now.div_euclid(w);
                let in_bucket = |b: i64| log.iter().filter(|&&t| t.div_euclid(w) == b).count() as u64;
                let (current, previous) = (in_bucket(bucket), in_bucket(bucket - 1));
                let elapsed = (now - bucket * w) as f64 / w as f64;
                let admits = (previous as f64 * (1.0 - elapsed) + current as f64) < c.limit as f64;
                (admits, Counter { bucket, current, previous })
            })
            .collect();
        let spent = checks.iter().zip(&seen).all(|(c, (admits, _))| *admits || !c.enforce);
        if spent {
            for c in checks {
                self.logs[c.index].push(now);
            }
        }
        let results = seen
            .into_iter()
            .map(|(admits, c)| WindowResult {
                admits,
                counter: Counter { current: c.current + u64::from(spent), ..c },
            })
            .collect();
        (spent, results)
    }
}

type Case = (Vec<(usize, u64, bool)>, Vec<(i64, u8)>);

fn cases(steps: usize) -> impl Strategy<Value = Case> {
    let policies = proptest::collection::vec((0..3usize, 1..6u64, proptest::bool::weighted(0.8)), 1..4);
    let advance = prop_oneof![Just(0i64), 0..2_000i64, 0..150_000i64, 0..8_000_000i64];
    (policies, proptest::collection::vec((advance, 1..8u8), 1..steps))
}

/// Run one case; with `stored`, also read the principal's key in Redis at
/// every step: it always has a TTL, and holds the counters in the format
/// replicas of different versions share in a rolling upgrade (per policy and
/// window three fields, each the counter's plain decimal integer).
async fn run(
    limiter: &dyn LimiterBackend,
    principal: &str,
    (policies, steps): Case,
    stored: Option<(&Redis, &str)>,
) -> Result<(), TestCaseError> {
    let checks: Vec<WindowCheck> = policies
        .iter()
        .enumerate()
        .map(|(i, &(w, limit, enforce))| WindowCheck {
            index: i,
            name: Arc::from(format!("w{i}")),
            limit,
            window_ms: WINDOWS[w],
            enforce,
        })
        .collect();
    let mut model = Model { logs: vec![Vec::new(); checks.len()] };
    let mut now = T0;
    for (step, (advance, mask)) in steps.into_iter().enumerate() {
        now += advance;
        let mut these: Vec<WindowCheck> =
            checks.iter().filter(|c| mask & (1 << c.index) != 0).cloned().collect();
        if these.is_empty() {
            these = checks.clone();
        }
        let want = model.check(&these, now);
        let (spent, got) = limiter
            .check_windows(principal, &these, now)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            &(spent, got.to_vec()),
            &want,
            "step {} at +{} ms, windows {:?}",
            step,
            now - T0,
            these
        );
        if let Some((conn, prefix)) = stored {
            let key = format!("{prefix}:rl:{{p:{principal}}}");
            let ttl: i64 = conn.cmd(redis::cmd("PTTL").arg(&key)).await.unwrap();
            prop_assert!(ttl > 0, "step {}: the key has a TTL (PTTL {})", step, ttl);
            let mut fields = redis::cmd("HMGET");
            fields.arg(&key);
            for c in &these {
                for part in ["b", "c", "p"] {
                    fields.arg(format!("{}:{}:{part}", c.name, c.window_ms));
                }
            }
            let held: Vec<Option<String>> = conn.cmd(&fields).await.unwrap();
            let counters: Vec<Option<String>> = want
                .1
                .iter()
                .flat_map(|r| [r.counter.bucket, r.counter.current as i64, r.counter.previous as i64])
                .map(|n| Some(n.to_string()))
                .collect();
            prop_assert_eq!(held, counters, "step {}: the stored fields", step);
        }
    }
    Ok(())
}

#[test]
fn the_memory_windows_match_the_reference_model() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut runner = TestRunner::new(Config { cases: 300, ..Config::default() });
    let result = runner.run(&cases(150), |case| {
        let limiter = sessiongate::ratelimit::memory::MemoryLimiter::default();
        rt.block_on(run(&limiter, "p", case, None))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The same on Redis, with its stored keys checked too: one server of the
/// test's own for all cases, each case a principal of its own.
#[test]
fn the_redis_windows_match_the_reference_model() {
    let server = crate::redis_server::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = rt.enter();
    let config = crate::store_suite::redis_config(vec![server.url()], "limiter-model");
    let events =
        Arc::new(sessiongate::telemetry::Events::new(Arc::new(sessiongate::telemetry::Metrics::new())));
    let conn = Arc::new(Redis::new(&config, events).unwrap());
    let limiter =
        sessiongate::ratelimit::redis::RedisLimiter::new(conn.clone(), std::time::Duration::from_secs(60));
    let case = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
    let result = runner.run(&cases(100), |c| {
        case.set(case.get() + 1);
        rt.block_on(run(&limiter, &format!("p{}", case.get()), c, Some((&conn, "limiter-model"))))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
