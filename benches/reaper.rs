//! The reaper's work per sweep must follow the sessions that expired, not the
//! sessions that exist (DESIGN.md §10). Two sweeps of the memory store:
//!
//! - `expired`: 100,000 live sessions, and 100 / 1,000 / 10,000 expired ones
//!   removed by one sweep: the time should grow ~linearly with the expired;
//! - `live`: 1,000 expired, among 10,000 / 100,000 / 400,000 live: the time
//!   should stay flat.
//!
//! Each measured sweep starts from the same state: the expired sessions are
//! re-created (untimed) before every sweep. `cargo bench --bench reaper`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sessiongate::config::OnLimit;
use sessiongate::sessions::{CreateRequest, Limits, SessionStore};
use sessiongate::store::memory::MemoryStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_795_600_800_000;
const IDLE_MS: i64 = 60_000;

fn limits(idle_ttl_ms: i64) -> Limits {
    Limits {
        max_per_user: 1_000_000,
        idle_ttl_ms,
        max_lifetime_ms: 10 * idle_ttl_ms,
        on_limit: OnLimit::Reject,
        idempotency_ttl_ms: 3_600_000,
        max_idempotency_keys: 100,
    }
}

/// `n` sessions of `n / 10` users, created at `at`, idle for at most `idle_ms`.
async fn fill(store: &MemoryStore, prefix: &str, n: usize, at: i64, idle_ms: i64) {
    for i in 0..n {
        let req = CreateRequest {
            id: uuid::Uuid::now_v7(),
            user_id: Arc::from(format!("{prefix}-{}", i / 10)),
            tool_set: Arc::from("general"),
            now: at,
            limits: limits(idle_ms),
            idempotency: None,
        };
        store.create(req).await.expect("memory store never fails");
    }
}

/// Time `iters` sweeps that each remove `expired` sessions among `live`.
fn sweeps(rt: &tokio::runtime::Runtime, live: usize, expired: usize, iters: u64) -> Duration {
    rt.block_on(async {
        let store = MemoryStore::new();
        // Live: idle for much longer than every sweep below. Time only moves
        // forward in a store: each round creates its sessions at the last
        // sweep's instant and sweeps once they have expired.
        fill(&store, "live", live, T0, 1_000 * IDLE_MS).await;
        let mut total = Duration::ZERO;
        for round in 0..iters as i64 {
            let created_at = T0 + round * (IDLE_MS + 1);
            fill(&store, "gone", expired, created_at, IDLE_MS).await;
            let started = Instant::now();
            let removed = store.reap(created_at + IDLE_MS + 1, usize::MAX).await.unwrap();
            total += started.elapsed();
            assert_eq!(removed.len(), expired);
        }
        total
    })
}

fn reaper(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // `cargo test --all-targets` runs this once as a smoke test, unoptimised:
    // keep that quick with smaller stores. `cargo bench` passes `--bench`.
    let scale = if std::env::args().any(|a| a == "--bench") { 1 } else { 100 };

    let mut by_expired = c.benchmark_group("reaper/expired");
    by_expired.sample_size(10);
    for expired in [100usize, 1_000, 10_000] {
        by_expired.throughput(Throughput::Elements(expired as u64));
        by_expired.bench_with_input(BenchmarkId::from_parameter(expired), &expired, |b, &expired| {
            b.iter_custom(|iters| sweeps(&rt, 100_000 / scale, expired / scale, iters));
        });
    }
    by_expired.finish();

    let mut by_live = c.benchmark_group("reaper/live");
    by_live.sample_size(10);
    for live in [10_000usize, 100_000, 400_000] {
        by_live.bench_with_input(BenchmarkId::from_parameter(live), &live, |b, &live| {
            b.iter_custom(|iters| sweeps(&rt, live / scale, 1_000 / scale, iters));
        });
    }
    by_live.finish();
}

criterion_group!(benches, reaper);
criterion_main!(benches);
