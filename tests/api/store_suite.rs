//! The behavioural suite every `SessionStore` backend must pass. Each case is
//! a function of a fresh store; `store_suite!` instantiates them all for one
//! backend (memory, Redis, Redis Cluster, below).

use sessiongate::config::OnLimit;
use sessiongate::sessions::*;
use std::sync::Arc;
use uuid::Uuid;

pub const NOW: i64 = 1_795_600_800_000;

pub fn limits(cap: u32, on_limit: OnLimit) -> Limits {
    Limits {
        max_per_user: cap,
        idle_ttl_ms: 60_000,
        max_lifetime_ms: 600_000,
        on_limit,
        idempotency_ttl_ms: 3_600_000,
        max_idempotency_keys: 100,
    }
}

pub fn req(user: &str, tool_set: &str, now: i64, l: Limits) -> CreateRequest {
    CreateRequest {
        id: Uuid::now_v7(),
        user_id: Arc::from(user),
        tool_set: Arc::from(tool_set),
        now,
        limits: l,
        idempotency: None,
    }
}

pub async fn created(store: &dyn SessionStore, r: CreateRequest) -> (Session, Vec<Session>) {
    match store.create(r).await.unwrap() {
        CreateOutcome::Created { session, evicted } => (session, evicted),
        other => panic!("expected Created, got {other:?}"),
    }
}

pub async fn create_get_list(store: Arc<dyn SessionStore>) {
    let l = limits(5, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "research", NOW + 1, l)).await;
    created(&*store, req("bob", "general", NOW, l)).await;
    assert_eq!(a.expires_at, NOW + 60_000);
    assert_eq!(store.get("alice", a.id, NOW).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("bob", a.id, NOW).await.unwrap(), None, "ownership is part of the lookup");
    assert_eq!(store.list("alice", NOW + 1).await.unwrap(), vec![a, b]);
}

pub async fn expired_sessions_are_invisible_and_never_count(store: Arc<dyn SessionStore>) {
    let l = limits(1, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let at_expiry = a.expires_at;
    assert_eq!(store.get("alice", a.id, at_expiry).await.unwrap(), None);
    assert!(store.list("alice", at_expiry).await.unwrap().is_empty());
    let hb = store.touch("alice", a.id, Activity::Heartbeat, at_expiry, &l).await.unwrap();
    assert_eq!(hb, None, "an expired session cannot be revived");
    assert_eq!(store.delete("alice", a.id, at_expiry).await.unwrap(), None);
    let (b, evicted) = created(&*store, req("alice", "general", at_expiry, l)).await;
    assert!(evicted.is_empty());
    assert_ne!(a.id, b.id);
}

pub async fn reject_reports_retry_after_and_live_ids(store: Arc<dyn SessionStore>) {
    let l = limits(2, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "general", NOW + 5_000, l)).await;
    match store.create(req("alice", "general", NOW + 10_000, l)).await.unwrap() {
        CreateOutcome::LimitReached { retry_after_ms, live } => {
            assert_eq!(retry_after_ms, 50_000);
            assert_eq!(live, vec![a.id, b.id]);
        }
        other => panic!("{other:?}"),
    }
}

pub async fn over_a_lowered_cap_reject_waits_for_enough_expiries(store: Arc<dyn SessionStore>) {
    let l = limits(3, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "general", NOW + 5_000, l)).await;
    let (c, _) = created(&*store, req("alice", "general", NOW + 10_000, l)).await;
    // Expiries at +60 s, +65 s, +70 s; at +20 s with cap 1 all three must go.
    for (cap, wait) in [(3, 40_000), (2, 45_000), (1, 50_000)] {
        match store.create(req("alice", "general", NOW + 20_000, limits(cap, OnLimit::Reject))).await.unwrap()
        {
            CreateOutcome::LimitReached { retry_after_ms, live } => {
                assert_eq!(retry_after_ms, wait, "cap {cap}");
                assert_eq!(live, vec![a.id, b.id, c.id]);
            }
            other => panic!("{other:?}"),
        }
    }
}

pub async fn activity_cannot_outlive_a_shortened_lifetime(store: Arc<dyn SessionStore>) {
    let l = limits(2, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "general", NOW + 40_000, l)).await;
    // max_lifetime lowered to 30 s: `a` is past it, `b` is not.
    let short = Limits { max_lifetime_ms: 30_000, ..l };
    let at = NOW + 50_000;
    assert_eq!(store.touch("alice", a.id, Activity::Heartbeat, at, &short).await.unwrap(), None);
    let t = store.touch("alice", b.id, Activity::Heartbeat, at, &short).await.unwrap().unwrap();
    assert_eq!(t.session.expires_at, NOW + 70_000);
    // `a` has expired: not seen, not counted, and the reaper ends it.
    assert_eq!(store.get("alice", a.id, at).await.unwrap(), None);
    assert_eq!(store.list("alice", at).await.unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), vec![b.id]);
    created(&*store, req("alice", "general", at, short)).await;
    let reaped = store.reap(at, 100).await.unwrap();
    assert_eq!(reaped.iter().map(|s| (s.id, s.expires_at)).collect::<Vec<_>>(), vec![(a.id, NOW + 30_000)]);
}

pub async fn a_change_never_runs_before_one_already_made(store: Arc<dyn SessionStore>) {
    // A heartbeat whose caller read its clock just before the session's
    // expiry, arriving after a create that no longer counted the session,
    // must not revive it: the user would hold more than the cap.
    let l = limits(1, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "general", a.expires_at, l)).await;
    let late = store.touch("alice", a.id, Activity::Heartbeat, a.expires_at - 1, &l).await.unwrap();
    assert_eq!(late, None, "an expired session stays expired");
    assert_eq!(store.delete("alice", a.id, a.expires_at - 1).await.unwrap(), None);
    let live: Vec<Uuid> = store.list("alice", a.expires_at - 1).await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(live, vec![b.id], "reads see the same time");
}

pub async fn a_clock_far_ahead_is_not_followed(store: Arc<dyn SessionStore>) {
    // A lead of a few milliseconds is reordering and is followed (above); one
    // of a day is a wrong clock (a replica running fast; this host's, stepped
    // back since) and must not drag every session to an early expiry.
    let l = limits(2, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    assert_eq!(store.delete("alice", Uuid::now_v7(), NOW + 86_400_000).await.unwrap(), None);
    let t = store.touch("alice", a.id, Activity::Heartbeat, NOW + 1_000, &l).await.unwrap();
    assert_eq!(t.map(|t| t.session.expires_at), Some(NOW + 61_000), "the session is still live");
    assert_eq!(store.list("alice", NOW + 1_000).await.unwrap().len(), 1);
    // The wrong time is forgotten: reordering is followed again from here.
    let (b, _) = created(&*store, req("alice", "general", NOW + 2_000, l)).await;
    assert_eq!(
        store
            .touch("alice", a.id, Activity::Heartbeat, NOW + 1_999, &l)
            .await
            .unwrap()
            .map(|t| t.session.last_active_at),
        Some(NOW + 2_000)
    );
    assert_eq!(store.list("alice", NOW + 2_000).await.unwrap().len(), 2, "{b:?}");
}

pub async fn eviction_takes_the_least_recently_active(store: Arc<dyn SessionStore>) {
    let l = limits(2, OnLimit::EvictOldest);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "general", NOW + 1_000, l)).await;
    store.touch("alice", a.id, Activity::Heartbeat, NOW + 2_000, &l).await.unwrap().unwrap();
    let (c, evicted) = created(&*store, req("alice", "general", NOW + 3_000, l)).await;
    assert_eq!(evicted.iter().map(|s| s.id).collect::<Vec<_>>(), vec![b.id]);
    let mut live: Vec<Uuid> = store.list("alice", NOW + 3_000).await.unwrap().iter().map(|s| s.id).collect();
    live.sort();
    let mut want = vec![a.id, c.id];
    want.sort();
    assert_eq!(live, want);
    // A lowered cap evicts down to it.
    let l1 = limits(1, OnLimit::EvictOldest);
    let (d, evicted) = created(&*store, req("alice", "general", NOW + 4_000, l1)).await;
    assert_eq!(evicted.len(), 2);
    assert_eq!(store.list("alice", NOW + 4_000).await.unwrap(), vec![d]);
}

pub async fn activities_move_last_active_and_expiry(store: Arc<dyn SessionStore>) {
    let l = limits(3, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let t = store.touch("alice", a.id, Activity::Query, NOW + 10, &l).await.unwrap().unwrap();
    assert_eq!((t.session.conversation_turns, t.session.last_active_at), (1, NOW + 10));
    assert_eq!(t.session.expires_at, NOW + 10 + 60_000);
    let t = store
        .touch("alice", a.id, Activity::Migrate { tool_set: Arc::from("coding") }, NOW + 20, &l)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*t.previous_tool_set, "general");
    assert_eq!((&*t.session.tool_set, t.session.conversation_turns, t.session.migrations), ("coding", 0, 1));
    assert_eq!(store.get("alice", a.id, NOW + 20).await.unwrap(), Some(t.session.clone()));
    assert_eq!(store.touch("bob", a.id, Activity::Heartbeat, NOW + 30, &l).await.unwrap(), None);
}

pub async fn delete_and_revoke_end_sessions_at_once(store: Arc<dyn SessionStore>) {
    let l = limits(3, OnLimit::Reject);
    let (a, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (b, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (c, _) = created(&*store, req("alice", "general", NOW, l)).await;
    assert_eq!(store.delete("bob", a.id, NOW).await.unwrap(), None);
    assert_eq!(store.delete("alice", a.id, NOW).await.unwrap().map(|s| s.id), Some(a.id));
    let mut revoked: Vec<Uuid> =
        store.revoke_user("alice", NOW).await.unwrap().iter().map(|s| s.id).collect();
    revoked.sort();
    let mut want = vec![b.id, c.id];
    want.sort();
    assert_eq!(revoked, want);
    assert!(store.list("alice", NOW).await.unwrap().is_empty());
    assert!(
        store.reap(NOW + 1_000_000, 100).await.unwrap().is_empty(),
        "ended sessions are not reaped again"
    );
}

pub async fn reap_returns_each_expired_session_exactly_once(store: Arc<dyn SessionStore>) {
    let l = limits(100, OnLimit::Reject);
    let mut all = Vec::new();
    for i in 0..50 {
        let user = format!("u{}", i % 7);
        all.push(created(&*store, req(&user, "general", NOW + i, l)).await.0.id);
    }
    let (alive, _) = created(&*store, req("late", "general", NOW + 30_000, l)).await;
    let at = NOW + 60_000 + 49;
    let reapers = (0..4).map(|_| {
        let s = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = s.reap(at, 7).await.unwrap();
                assert!(batch.len() <= 7, "a sweep returns at most max, got {}", batch.len());
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|s| s.id));
            }
        })
    });
    let mut reaped: Vec<Uuid> =
        futures::future::join_all(reapers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    reaped.sort();
    all.sort();
    assert_eq!(reaped, all, "every expired session once, none twice, the live one kept");
    assert_eq!(store.get("late", alive.id, at).await.unwrap().map(|s| s.id), Some(alive.id));
}

pub async fn stats_count_live_by_tool_set_and_pending_expiries(store: Arc<dyn SessionStore>) {
    let l = limits(10, OnLimit::Reject);
    created(&*store, req("alice", "general", NOW, l)).await;
    created(&*store, req("alice", "coding", NOW + 30_000, l)).await;
    created(&*store, req("bob", "coding", NOW + 30_000, l)).await;
    let stats = store.stats(NOW + 60_000).await.unwrap();
    assert_eq!(stats.expired_pending, 1);
    assert_eq!(
        stats.active_by_tool_set.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Vec<_>>(),
        vec![("coding".into(), 2)]
    );
    store.reap(NOW + 60_000, 100).await.unwrap();
    assert_eq!(store.stats(NOW + 60_000).await.unwrap().expired_pending, 0);
}

pub async fn idempotency_replays_conflicts_and_expires(store: Arc<dyn SessionStore>) {
    let l = limits(1, OnLimit::EvictOldest);
    let with_key = |key: &str, fp: &str, now: i64| {
        let mut r = req("alice", "general", now, l);
        r.idempotency = Some(IdempotencyRequest { key: key.into(), fingerprint: fp.into() });
        r
    };
    let (victim, _) = created(&*store, req("alice", "general", NOW, l)).await;
    let (first, evicted) = created(&*store, with_key("k", "fp1", NOW + 1)).await;
    assert_eq!(evicted.iter().map(|s| s.id).collect::<Vec<_>>(), vec![victim.id]);
    store.delete("alice", first.id, NOW + 2).await.unwrap();
    assert_eq!(
        store.create(with_key("k", "fp1", NOW + 3)).await.unwrap(),
        CreateOutcome::Replayed { session: first.clone(), evicted_ids: vec![victim.id] }
    );
    assert_eq!(
        store.create(with_key("k", "fp2", NOW + 4)).await.unwrap(),
        CreateOutcome::IdempotencyConflict
    );
    assert!(store.list("alice", NOW + 4).await.unwrap().is_empty(), "replays and conflicts create nothing");
    // After the TTL the key is free again (once the reaper has run, or not).
    let after = NOW + 1 + 3_600_000;
    store.reap(after, 100).await.unwrap();
    let (again, _) = created(&*store, with_key("k", "fp1", after)).await;
    assert_ne!(again.id, first.id);
}

/// User `a` with key `x:k` and user `a:x` with key `k` are different records.
/// `x` is chosen so both users share a Redis slot group, where the old key
/// layout `i:<user>:<key>` gave both the same key (`i:a:x:k`).
pub async fn idempotency_keys_never_cross_users(store: Arc<dyn SessionStore>) {
    use sessiongate::store::redis::group_of;
    let x =
        (0..100_000).map(|n| n.to_string()).find(|x| group_of(&format!("a:{x}")) == group_of("a")).unwrap();
    let l = limits(5, OnLimit::Reject);
    let with = |user: &str, key: &str| {
        let mut r = req(user, "general", NOW, l);
        r.idempotency = Some(IdempotencyRequest { key: key.into(), fingerprint: "fp".into() });
        r
    };
    let (first, _) = created(&*store, with("a", &format!("{x}:k"))).await;
    let (second, _) = created(&*store, with(&format!("a:{x}"), "k")).await;
    assert_ne!(first.id, second.id, "the second user got their own session, not a replay");
    assert_eq!(&*second.user_id, format!("a:{x}"));
}

/// A user holds at most `max_idempotency_keys` unexpired keys: a new key
/// beyond that is refused (nothing created, nothing evicted) with the wait
/// until the oldest expires; replays of held keys still work; an expired key
/// frees its place whether or not the reaper has run.
pub async fn idempotency_keys_per_user_are_bounded(store: Arc<dyn SessionStore>) {
    let l = Limits { max_idempotency_keys: 2, ..limits(1, OnLimit::EvictOldest) };
    let with = |user: &str, key: &str, now: i64| {
        let mut r = req(user, "general", now, l);
        r.idempotency = Some(IdempotencyRequest { key: key.into(), fingerprint: "fp".into() });
        r
    };
    let (a, _) = created(&*store, with("alice", "a", NOW)).await;
    let (b, _) = created(&*store, with("alice", "b", NOW + 10)).await;
    assert_eq!(
        store.create(with("alice", "c", NOW + 20)).await.unwrap(),
        CreateOutcome::IdempotencyKeysExhausted { retry_after_ms: 3_600_000 - 20 }
    );
    let live: Vec<_> = store.list("alice", NOW + 20).await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(live, vec![b.id], "the refused create neither created nor evicted");
    assert!(matches!(
        store.create(with("alice", "a", NOW + 30)).await.unwrap(),
        CreateOutcome::Replayed { session, .. } if session.id == a.id
    ));
    // Other users and key-less creates are not affected.
    created(&*store, with("bob", "c", NOW + 30)).await;
    created(&*store, req("alice", "general", NOW + 30, l)).await;
    // When `a` expires (no reaper run) a new key fits again, but only one.
    let later = NOW + 3_600_000;
    created(&*store, with("alice", "c", later)).await;
    assert_eq!(
        store.create(with("alice", "d", later)).await.unwrap(),
        CreateOutcome::IdempotencyKeysExhausted { retry_after_ms: 10 }
    );
    // The bound is read per request: raising it admits the next key at once.
    let raised = Limits { max_idempotency_keys: 3, ..l };
    let mut r = req("alice", "general", later, raised);
    r.idempotency = Some(IdempotencyRequest { key: "d".into(), fingerprint: "fp".into() });
    created(&*store, r).await;
    // Lowered to 1 while b, c and d are held: fewer than 1 means all three
    // gone, so the wait runs to c's and d's expiry (`later` + ttl), not just
    // to the oldest's (b, in 10 ms): never early.
    let lowered = Limits { max_idempotency_keys: 1, ..l };
    let mut r = req("alice", "general", later, lowered);
    r.idempotency = Some(IdempotencyRequest { key: "e".into(), fingerprint: "fp".into() });
    assert_eq!(
        store.create(r).await.unwrap(),
        CreateOutcome::IdempotencyKeysExhausted { retry_after_ms: 3_600_000 }
    );
}

pub async fn the_cap_holds_under_concurrent_creates(store: Arc<dyn SessionStore>) {
    for on_limit in [OnLimit::Reject, OnLimit::EvictOldest] {
        let user = format!("busy-{on_limit:?}");
        let l = limits(3, on_limit);
        let tasks = (0..30).map(|i| {
            let s = store.clone();
            let r = req(&user, "general", NOW + (i % 3), l);
            tokio::spawn(async move { s.create(r).await.unwrap() })
        });
        let outcomes: Vec<CreateOutcome> =
            futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
        let created = outcomes.iter().filter(|o| matches!(o, CreateOutcome::Created { .. })).count();
        let live = store.list(&user, NOW + 3).await.unwrap().len();
        assert_eq!(live, 3, "{on_limit:?}");
        if on_limit == OnLimit::Reject {
            assert_eq!(created, 3);
        } else {
            let evicted: usize = outcomes
                .iter()
                .map(|o| if let CreateOutcome::Created { evicted, .. } = o { evicted.len() } else { 0 })
                .sum();
            assert_eq!((created, evicted), (30, 27));
        }
    }
}

macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            store_suite!(@cases $make;
                create_get_list,
                expired_sessions_are_invisible_and_never_count,
                reject_reports_retry_after_and_live_ids,
                over_a_lowered_cap_reject_waits_for_enough_expiries,
                activity_cannot_outlive_a_shortened_lifetime,
                a_change_never_runs_before_one_already_made,
                a_clock_far_ahead_is_not_followed,
                eviction_takes_the_least_recently_active,
                activities_move_last_active_and_expiry,
                delete_and_revoke_end_sessions_at_once,
                reap_returns_each_expired_session_exactly_once,
                stats_count_live_by_tool_set_and_pending_expiries,
                idempotency_replays_conflicts_and_expires,
                idempotency_keys_never_cross_users,
                idempotency_keys_per_user_are_bounded,
                the_cap_holds_under_concurrent_creates,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let make = $make;
                // The guard keeps whatever the store needs (a Redis server) alive.
                let (store, _guard): (Arc<dyn SessionStore>, Box<dyn std::any::Any + Send>) = make().await;
                super::$case(store).await;
            }
        )*
    };
}

store_suite!(memory, || async {
    (
        Arc::new(sessiongate::store::MemoryStore::new()) as Arc<dyn SessionStore>,
        Box::new(()) as Box<dyn std::any::Any + Send>,
    )
});

/// A Redis store (single node or cluster, as `config` says) with its own metrics.
pub fn redis_store_from(config: sessiongate::config::StoreConfig) -> Arc<dyn SessionStore> {
    let events =
        Arc::new(sessiongate::telemetry::Events::new(Arc::new(sessiongate::telemetry::Metrics::new())));
    let redis = Arc::new(sessiongate::store::redis::Redis::new(&config, events).unwrap());
    Arc::new(sessiongate::store::RedisStore::new(redis))
}

/// The store settings for Redis at `urls` (one: a single node; several: cluster seeds).
pub fn redis_config(urls: Vec<String>, prefix: &str) -> sessiongate::config::StoreConfig {
    let mut config = sessiongate::config::StoreConfig {
        backend: sessiongate::config::StoreBackend::Redis,
        key_prefix: prefix.to_string(),
        ..Default::default()
    };
    let mut urls: Vec<sessiongate::config::Secret> =
        urls.into_iter().map(sessiongate::config::Secret::new).collect();
    if urls.len() == 1 {
        config.redis_url = urls.remove(0);
    } else {
        config.redis_cluster_urls = urls;
    }
    config
}

store_suite!(redis_cluster, || async {
    let cluster = crate::redis_server::RedisCluster::start();
    let store = redis_store_from(redis_config(cluster.urls(), "suite"));
    (store, Box::new(cluster) as Box<dyn std::any::Any + Send>)
});

store_suite!(redis, || async {
    let server = crate::redis_server::RedisServer::start();
    let store = redis_store_from(redis_config(vec![server.url()], "suite"));
    (store, Box::new(server) as Box<dyn std::any::Any + Send>)
});

/// A replica whose wall clock is a day off Redis's is held to within the
/// clock slack of Redis's own time: ahead, it neither reaps nor stops counting
/// the others' live sessions; behind, its heartbeat sets no expiry in the
/// past. The same calls with a test's clock (not bounded) show what the bound
/// prevents.
#[tokio::test]
async fn redis_holds_a_wrong_wall_clock_near_its_own() {
    use sessiongate::clock::{Clock, SystemClock};
    const DAY: i64 = 86_400_000;
    let server = crate::redis_server::RedisServer::start();
    let events =
        Arc::new(sessiongate::telemetry::Events::new(Arc::new(sessiongate::telemetry::Metrics::new())));
    let redis = Arc::new(
        sessiongate::store::redis::Redis::new(&redis_config(vec![server.url()], "wall"), events).unwrap(),
    );
    let store = sessiongate::store::RedisStore::new(redis.clone()).bounding_wall_clocks(true);
    let l = limits(2, OnLimit::Reject);
    let now = SystemClock.now_ms();
    created(&store, req("alice", "general", now, l)).await;

    // A day ahead: its sweep takes nothing, and its creates still count
    // alice's live session against her cap of 2.
    assert_eq!(store.reap(now + DAY, 100).await.unwrap(), vec![]);
    assert_eq!(store.stats(now + DAY).await.unwrap().expired_pending, 0);
    created(&store, req("alice", "general", now + DAY, l)).await;
    match store.create(req("alice", "general", now + DAY, l)).await.unwrap() {
        CreateOutcome::LimitReached { live, .. } => assert_eq!(live.len(), 2),
        other => panic!("a third session over a cap of 2: {other:?}"),
    }
    // A day behind: its create lands within the slack of Redis's time, so
    // the session is live (at its own time it would have expired long ago).
    let (b, _) = created(&store, req("bob", "general", now - DAY, l)).await;
    assert!(b.created_at >= now - 5_000 && b.expires_at > now, "{b:?}");
    assert_eq!(store.list("alice", now).await.unwrap().len(), 2);
    assert_eq!(store.list("bob", now).await.unwrap().len(), 1);

    // Unbounded (a test's clock, set anywhere), the day-ahead sweep takes all three.
    let unbounded = sessiongate::store::RedisStore::new(redis);
    assert_eq!(unbounded.reap(now + DAY, 100).await.unwrap().len(), 3);
}
