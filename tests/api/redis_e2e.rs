//! sessiongate on Redis, end to end: two real sessiongate processes sharing
//! one redis-server (the test's own), outages with the server killed and
//! restarted mid-traffic, and the rate limiter's store-error policy.

use crate::helpers::*;
use crate::process::SgProcess;
use crate::redis_server::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Start the real binary on the Redis store; `extra` are more env settings.
fn start_process(redis_url: &str, prefix: &str, extra: &[(&str, &str)]) -> SgProcess {
    let mut env = vec![
        ("SESSIONGATE__STORE__BACKEND", "redis"),
        ("SESSIONGATE__STORE__REDIS_URL", redis_url),
        ("SESSIONGATE__STORE__KEY_PREFIX", prefix),
        ("SESSIONGATE__STORE__COMMAND_TIMEOUT", "300ms"),
        ("SESSIONGATE__RATE_LIMIT__POLICIES", "[]"),
        ("SESSIONGATE__RATE_LIMIT__PER_IP", "{per_second=0,burst=1}"),
    ];
    env.extend_from_slice(extra);
    SgProcess::start(&env)
}

async fn create(c: &reqwest::Client, p: &SgProcess, tok: &str) -> reqwest::Response {
    c.post(p.url("/v1/sessions")).bearer_auth(tok).json(&json!({"tool_set": "general"})).send().await.unwrap()
}

#[tokio::test]
async fn two_processes_share_sessions_and_one_cap() {
    let redis = RedisServer::start();
    let cap = [("SESSIONGATE__SESSIONS__MAX_PER_USER", "3"), ("SESSIONGATE__SESSIONS__ON_LIMIT", "reject")];
    let a = start_process(&redis.url(), "two", &cap);
    let b = start_process(&redis.url(), "two", &cap);
    let c = client();
    let alice = token("alice");

    // Created on A, served by B.
    let s: Value = create(&c, &a, &alice).await.json().await.unwrap();
    let id = s["id"].as_str().unwrap();
    let got = c.get(b.url(&format!("/v1/sessions/{id}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.json::<Value>().await.unwrap(), s);
    assert_eq!(
        c.delete(b.url(&format!("/v1/sessions/{id}"))).bearer_auth(&alice).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    // 40 concurrent creates split over A and B at cap 3 leave exactly 3.
    let bob = token("bob");
    let results =
        futures::future::join_all((0..40).map(|n| create(&c, if n % 2 == 0 { &a } else { &b }, &bob))).await;
    let created = results.iter().filter(|r| r.status() == StatusCode::CREATED).count();
    assert_eq!(created, 3);
    assert!(
        results
            .iter()
            .all(|r| r.status() == StatusCode::CREATED || r.status() == StatusCode::TOO_MANY_REQUESTS)
    );
    let listed: Value =
        c.get(a.url("/v1/sessions")).bearer_auth(&bob).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn evictions_across_processes_still_leave_the_cap() {
    let redis = RedisServer::start();
    let cap = [("SESSIONGATE__SESSIONS__MAX_PER_USER", "3")];
    let a = start_process(&redis.url(), "evict", &cap);
    let b = start_process(&redis.url(), "evict", &cap);
    let c = client();
    let carol = token("carol");
    let results =
        futures::future::join_all((0..40).map(|n| create(&c, if n % 2 == 0 { &a } else { &b }, &carol)))
            .await;
    assert!(results.iter().all(|r| r.status() == StatusCode::CREATED));
    let listed: Value =
        c.get(b.url("/v1/sessions")).bearer_auth(&carol).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 3);
    // Each eviction was counted once, by the process that did it.
    let mut evicted = 0.0;
    for p in [&a, &b] {
        let text = c.get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
        evicted += text
            .lines()
            .find(|l| l.starts_with(r#"sessiongate_sessions_ended_total{reason="evicted"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap();
    }
    assert_eq!(evicted, 37.0);
}

#[tokio::test]
async fn two_processes_enforce_one_global_rate_limit() {
    let redis = RedisServer::start();
    let policy = [("SESSIONGATE__RATE_LIMIT__POLICIES", r#"[{name="global",limit=10,window="60s"}]"#)];
    let a = start_process(&redis.url(), "rl", &policy);
    let b = start_process(&redis.url(), "rl", &policy);
    let c = client();
    let dave = token("dave");
    let mut ok = 0;
    for n in 0..30 {
        let p = if n % 2 == 0 { &a } else { &b };
        if c.get(p.url("/v1/sessions")).bearer_auth(&dave).send().await.unwrap().status() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 10, "one limit across both replicas");
}

#[tokio::test]
async fn a_dead_redis_is_a_fast_503_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start_persistent();
    let app = spawn_app_with(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"outage\"\ncommand_timeout = \"300ms\"",
        redis.url()
    ))
    .await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);

    app.expect_failures(); // Redis goes away below
    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let r = app.get(&alice, &path).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by command_timeout, took {:?}",
            started.elapsed()
        );
        assert!(r.headers().get("retry-after").is_some());
        assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE").await;
    }
    // Still ready (every replica shares the store: failing would empty the
    // load balancer), and the body says the store is down.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["store"], "down", "{ready}");
    assert!(ready["store_error"].as_str().is_some_and(|e| !e.is_empty()), "{ready}");
    assert_eq!(app.metric(r#"sessiongate_store_up{backend="redis"}"#).await, Some(0.0));

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.get(&alice, &path).await.status() == StatusCode::OK
        })
        .await,
        "recovered without a restart of sessiongate"
    );
    let got: Value = app.get(&alice, &path).await.json().await.unwrap();
    assert_eq!(got["id"], s["id"], "the session survived Redis restarting (append-only file)");
    let ready: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["store"], "up", "{ready}");
    assert!(ready.get("store_error").is_none(), "{ready}");
    assert_eq!(app.metric(r#"sessiongate_store_up{backend="redis"}"#).await, Some(1.0));
}

#[tokio::test]
async fn restarting_sessiongate_loses_no_session() {
    let redis = RedisServer::start();
    let cfg =
        format!("[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"restart\"", redis.url());
    let alice = token("alice");
    let first = spawn_app_with(&cfg).await;
    let s = first.create_ok(&alice, "research").await;
    first.stop().await.unwrap();
    let second = spawn_app_with(&cfg).await;
    let got: Value = second
        .get(&alice, &format!("/v1/sessions/{}", s["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, s);
}

/// On Redis a GET's handler runs alongside the limiter's check (one round
/// trip instead of two): what the client sees must be what it was when the
/// check came first.
#[tokio::test]
async fn a_get_read_alongside_the_limit_answers_as_if_the_limit_came_first() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         [[rate_limit.policies]]\nname = \"reads\"\nlimit = 3\nwindow = \"60s\"\n\
         routes = [\"GET /v1/sessions/{{id}}\"]",
        redis.url()
    ))
    .await;
    let erin = token("erin");
    let created = app.post(&erin, "/v1/sessions", json!({"tool_set": "general"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/sessions/{id}");
    for left in [2, 1, 0] {
        let r = app.get(&erin, &path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let limit = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert_eq!(limit, format!("\"reads\";r={left};t=60"), "spent in order");
        assert_eq!(r.json::<Value>().await.unwrap()["id"], json!(id));
    }
    // The reads ran alongside the checks: a refused one has read too.
    let reads = r#"sessiongate_store_operation_duration_seconds_count{backend="redis",operation="get"}"#;
    let read_before = app.metric(reads).await.unwrap_or(0.0);
    // Refused: a 429 and nothing of the session, for a session that exists
    // and for one that does not (the limit answers, not the handler).
    for path in [path.clone(), "/v1/sessions/0190f7d2-0000-7000-8000-000000000000".to_string()] {
        let r = app.get(&erin, &path).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(r.headers().contains_key("retry-after"));
        let body = r.json::<Value>().await.unwrap();
        assert_eq!(body["code"], json!("RATE_LIMITED"), "{body}");
        assert!(body.get("tool_set").is_none() && body.get("id").is_none(), "{body}");
    }
    assert_eq!(app.metric(reads).await, Some(read_before + 2.0), "read alongside the refusing checks");
    // Another user's session is a 404 while the limit admits.
    let frank = token("frank");
    assert_eq!(app.get(&frank, &path).await.status(), StatusCode::NOT_FOUND);
    // A HEAD is a GET.
    let head = client().head(app.url(&path)).bearer_auth(&erin).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::TOO_MANY_REQUESTS);

    // Where a concurrency policy applies, its slot comes first: a refused
    // read reads nothing.
    let capped = spawn_app_with(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"capped\"\n\
         [[rate_limit.policies]]\nname = \"reads\"\nlimit = 1\nwindow = \"60s\"\n\
         routes = [\"GET /v1/sessions/{{id}}\"]\n\
         [[rate_limit.policies]]\nname = \"in-flight\"\nkind = \"concurrency\"\nlimit = 5\n\
         routes = [\"GET /v1/sessions/{{id}}\"]",
        redis.url()
    ))
    .await;
    let created = capped.post(&erin, "/v1/sessions", json!({"tool_set": "general"})).await;
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/sessions/{id}");
    assert_eq!(capped.get(&erin, &path).await.status(), StatusCode::OK);
    let read_before = capped.metric(reads).await.unwrap_or(0.0);
    assert_eq!(capped.get(&erin, &path).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(capped.metric(reads).await, Some(read_before), "no read before the slot and the windows");
}

#[tokio::test]
async fn the_rate_limiter_fails_open_or_closed_as_configured() {
    // A shadow policy never rejects, not even with `deny`.
    for (mode, shadow, want) in [
        ("allow", false, StatusCode::OK),
        ("deny", false, StatusCode::SERVICE_UNAVAILABLE),
        ("deny", true, StatusCode::OK),
    ] {
        let mut redis = RedisServer::start();
        let app = spawn_app_with(&format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\ncommand_timeout = \"200ms\"\n\
             [rate_limit]\non_store_error = \"{mode}\"\nshadow = {shadow}\n\
             [[rate_limit.policies]]\nname = \"p\"\nlimit = 100\nwindow = \"60s\"\nroutes = [\"GET /v1/tool-sets\"]",
            redis.url()
        ))
        .await;
        let alice = token("alice");
        let r = app.get(&alice, "/v1/tool-sets").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("ratelimit"));
        let measured =
            r#"sessiongate_store_operation_duration_seconds_count{backend="redis",operation="ratelimit"}"#;
        assert_eq!(app.metric(measured).await, Some(1.0), "the limiter's call is measured");
        app.expect_failures(); // Redis goes away below
        redis.kill();
        // /v1/tool-sets needs no session store: only the limiter touches Redis.
        let r = app.get(&alice, "/v1/tool-sets").await;
        assert_eq!(r.status(), want, "on_store_error = {mode}, shadow = {shadow}");
        if want == StatusCode::OK {
            // Nothing was counted, so there is nothing to say (and an empty
            // structured field would be invalid).
            assert!(!r.headers().contains_key("ratelimit"), "{:?}", r.headers());
            assert!(!r.headers().contains_key("ratelimit-policy"));
        }
        assert_eq!(app.metric(r#"sessiongate_ratelimit_store_errors_total{policy="p"}"#).await, Some(1.0));
        let failed = r#"sessiongate_store_errors_total{backend="redis",operation="ratelimit"}"#;
        assert_eq!(app.metric(failed).await, Some(1.0));
    }
}

#[tokio::test]
async fn the_whole_service_runs_on_a_redis_cluster() {
    let cluster = crate::redis_server::RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    let app = spawn_app_with(&format!(
        "[store]\nbackend = \"redis\"\nredis_cluster_urls = [{}]\nkey_prefix = \"c\"\n\
         [sessions]\nidle_ttl = \"60s\"\nreaper_interval = \"50ms\"\nmax_per_user = 2\n\
         [[rate_limit.policies]]\nname = \"p\"\nlimit = 1000\nwindow = \"60s\"",
        urls.join(", ")
    ))
    .await;
    // Many users, so their groups land on every node.
    let mut first = Vec::new();
    for n in 0..40 {
        let t = token(&format!("user-{n}"));
        let s = app.create_ok(&t, "general").await;
        app.create_ok(&t, "coding").await;
        let third = app.create_ok(&t, "research").await; // evicts the first
        assert_eq!(third["evicted_session_id"], s["id"]);
        first.push((t, s));
    }
    assert!(
        cluster.keys_per_node().iter().all(|&k| k > 0),
        "keys on every node: {:?}",
        cluster.keys_per_node()
    );
    let (t, _) = &first[7];
    assert_eq!(app.live_ids(t).await.len(), 2);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.metric(r#"sessiongate_sessions_active{tool_set="coding"}"#).await == Some(40.0)
        })
        .await,
        "the global gauge sums every node"
    );
    app.clock.advance(Duration::from_secs(61));
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.metric(r#"sessiongate_sessions_ended_total{reason="expired"}"#).await == Some(80.0)
        })
        .await,
        "every expiry reaped once, from every node"
    );
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="evicted"}"#).await, Some(40.0));
    assert_eq!(app.metric(r#"sessiongate_ratelimit_store_errors_total{policy="p"}"#).await, Some(0.0));
}

#[tokio::test]
async fn a_config_patch_on_one_process_is_in_force_on_the_other_within_a_second() {
    let redis = RedisServer::start();
    let cap = [("SESSIONGATE__SESSIONS__MAX_PER_USER", "1"), ("SESSIONGATE__SESSIONS__ON_LIMIT", "reject")];
    let a = start_process(&redis.url(), "cfg", &cap);
    let b = start_process(&redis.url(), "cfg", &cap);
    let c = client();
    let admin = admin_token("oncall");
    let r = c
        .patch(a.url("/v1/admin/config"))
        .bearer_auth(&admin)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"sessions": {"max_per_user": 7}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let changed = Instant::now();
    let mut seen = None;
    // (B polls every 500 ms: in force within a second by design; a loaded
    // machine is given longer, as this is not a timing test.)
    while changed.elapsed() < Duration::from_secs(10) {
        let doc: Value =
            c.get(b.url("/v1/admin/config")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        if doc["sessions"]["max_per_user"] == 7 {
            seen = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.expect("B picked up A's change");
    // And B enforces it: a user may now hold more than the file's one session.
    let alice = token("alice");
    for _ in 0..3 {
        assert_eq!(create(&c, &b, &alice).await.status(), StatusCode::CREATED);
    }
    let text = c.get(b.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains(r#"sessiongate_config_changes_total{source="replica"} 1"#),
        "counted on B as a replica change"
    );
}

/// A Redis connection and the Redis limiter on `redis`, under `prefix`; the
/// connection too, for reading the limiter's keys.
fn limiter_on(
    redis: &RedisServer,
    prefix: &str,
) -> (std::sync::Arc<sessiongate::store::redis::Redis>, sessiongate::ratelimit::redis::RedisLimiter) {
    let config = crate::store_suite::redis_config(vec![redis.url()], prefix);
    let events = std::sync::Arc::new(sessiongate::telemetry::Events::new(std::sync::Arc::new(
        sessiongate::telemetry::Metrics::new(),
    )));
    let conn = std::sync::Arc::new(sessiongate::store::redis::Redis::new(&config, events).unwrap());
    let limiter = sessiongate::ratelimit::redis::RedisLimiter::new(conn.clone(), Duration::from_secs(60));
    (conn, limiter)
}

/// A request on a route with only short windows must not shorten the life of
/// a long window's counters (they share the principal's key).
#[tokio::test]
async fn short_windows_never_expire_a_long_windows_counters() {
    use sessiongate::ratelimit::{LimiterBackend, WindowCheck};
    let redis = RedisServer::start();
    let (conn, limiter) = limiter_on(&redis, "ttl");
    let check = |name: &str, window_ms: i64| WindowCheck {
        index: 0,
        name: std::sync::Arc::from(name),
        limit: 1000,
        window_ms,
        enforce: true,
    };
    let now = T0;
    limiter.check_windows("alice", &[check("daily", 86_400_000)], now).await.unwrap();
    limiter.check_windows("alice", &[check("minute", 60_000)], now).await.unwrap();
    let ttl: i64 = conn.cmd(redis::cmd("PTTL").arg("ttl:rl:{p:alice}")).await.unwrap();
    assert!(ttl > 86_400_000, "the daily window's counters still live for two days: {ttl} ms");
}

/// A Redis that lost its scripts (restarted without them, a failover, `SCRIPT
/// FLUSH`) answers NOSCRIPT: the script is loaded and the call sent again,
/// with nothing counted twice or lost.
#[tokio::test]
async fn a_redis_without_the_scripts_gets_them_again() {
    use sessiongate::ratelimit::{LimiterBackend, WindowCheck};
    let redis = RedisServer::start();
    let (conn, limiter) = limiter_on(&redis, "noscript");
    let check = [WindowCheck {
        index: 0,
        name: std::sync::Arc::from("m"),
        limit: 10,
        window_ms: 60_000,
        enforce: true,
    }];
    let count = |r: &(bool, sessiongate::ratelimit::PerPolicy<sessiongate::ratelimit::WindowResult>)| {
        r.1[0].counter.current
    };
    assert_eq!(count(&limiter.check_windows("carol", &check, T0).await.unwrap()), 1);
    let _: String = conn.cmd(redis::cmd("SCRIPT").arg("FLUSH")).await.unwrap();
    assert_eq!(count(&limiter.check_windows("carol", &check, T0 + 1).await.unwrap()), 2, "loaded again");
    let window = redis::Script::new(include_str!("../../src/ratelimit/window.lua"));
    let loaded: Vec<bool> =
        conn.cmd(redis::cmd("SCRIPT").arg("EXISTS").arg(window.get_hash())).await.unwrap();
    assert_eq!(loaded, [true]);
}

/// A slot whose holder never gave it back lapses at its deadline, even while
/// the principal keeps making requests; a released slot is free at once.
#[tokio::test]
async fn a_leaked_concurrency_slot_lapses_at_its_deadline() {
    use sessiongate::ratelimit::{LimiterBackend, WindowCheck};
    let redis = RedisServer::start();
    let (_, limiter) = limiter_on(&redis, "slots");
    let policy = WindowCheck {
        index: 0,
        name: std::sync::Arc::from("in-flight"),
        limit: 1,
        window_ms: 0,
        enforce: true,
    };
    assert_eq!(limiter.acquire("bob", &policy, 1, T0).await.unwrap(), Some(1));
    assert_eq!(limiter.acquire("bob", &policy, 2, T0 + 1_000).await.unwrap(), None, "full");
    limiter.release("bob", &policy, 1).await;
    assert_eq!(limiter.acquire("bob", &policy, 3, T0 + 2_000).await.unwrap(), Some(1), "released at once");
    // Token 3 is never released (a crashed replica): busy retries are refused
    // until its deadline, then admitted.
    assert_eq!(limiter.acquire("bob", &policy, 4, T0 + 30_000).await.unwrap(), None);
    assert_eq!(
        limiter.acquire("bob", &policy, 5, T0 + 62_001).await.unwrap(),
        Some(1),
        "lapsed at its deadline"
    );
}

// The Redis limiter's windows against the reference model, and the keys it
// stores: limiter_model.rs.

#[tokio::test]
async fn a_tool_set_no_longer_configured_is_gauged_until_its_last_session_ends() {
    let redis = RedisServer::start();
    let store = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"gone\"\n\
         [sessions]\nreaper_interval = \"50ms\"\n",
        redis.url()
    );
    let alice = token("alice");
    let before = spawn_app_with(&format!(
        "{store}[[tool_sets]]\nname = \"general\"\ntools = [\"search\"]\n\
         [[tool_sets]]\nname = \"legacy\"\ntools = [\"fax\"]"
    ))
    .await;
    let s = before.create_ok(&alice, "legacy").await;
    before.stop().await.unwrap();

    // `legacy` is gone from the file; its session is still in Redis.
    let after =
        spawn_app_with(&format!("{store}[[tool_sets]]\nname = \"general\"\ntools = [\"search\"]")).await;
    let gauge = r#"sessiongate_sessions_active{tool_set="legacy"}"#;
    assert!(eventually(Duration::from_secs(5), || async { after.metric(gauge).await == Some(1.0) }).await);
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    assert_eq!(after.delete(&alice, &path).await.status(), StatusCode::NO_CONTENT);
    assert!(
        eventually(Duration::from_secs(5), || async { after.metric(gauge).await == Some(0.0) }).await,
        "the gauge stays at {:?}",
        after.metric(gauge).await
    );
}

#[tokio::test]
async fn a_change_whose_client_stopped_waiting_is_still_counted() {
    // The DELETE reaches Redis, but its client gives up before the reply: the
    // session is gone all the same, and its end must be counted (the reaper
    // will never see it).
    let redis = RedisServer::start();
    let app = spawn_app_with(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\ncommand_timeout = \"5s\"",
        redis.url()
    ))
    .await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    redis.pause();
    app.abandon(app.client.delete(app.url(&path)).bearer_auth(&alice), "DELETE").await;
    redis.resume();
    let ended = r#"sessiongate_sessions_ended_total{reason="deleted"}"#;
    assert!(
        eventually(Duration::from_secs(5), || async { app.metric(ended).await == Some(1.0) }).await,
        "ended: {:?}",
        app.metric(ended).await
    );
    assert_eq!(app.get(&alice, &path).await.status(), StatusCode::NOT_FOUND);
}

/// A replica's wall clock a day fast, on the same Redis as one whose clock is
/// right: its reaper and its stats are held to Redis's time, so the session
/// the other made stays live. The same replica on a test's clock (not a wall
/// clock, so not bounded) reaps it: what the bound prevents.
#[tokio::test]
async fn a_replica_whose_clock_runs_a_day_fast_reaps_nothing_live() {
    use sessiongate::clock::{Clock, ManualClock, SystemClock};
    struct DayFast;
    impl Clock for DayFast {
        fn now_ms(&self) -> i64 {
            SystemClock.now_ms() + 86_400_000
        }
        fn is_wall(&self) -> bool {
            true
        }
    }
    let redis = RedisServer::start();
    let config = |reaper: &str| {
        test_config(&format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"skew\"\n\
             [sessions]\nreaper_interval = \"{reaper}\"",
            redis.url()
        ))
    };
    let right = spawn_config_on(config("1h"), ManualClock::new(T0), std::sync::Arc::new(SystemClock)).await;
    let alice = token("alice");
    let id = right.create_ok(&alice, "general").await["id"].as_str().unwrap().to_string();

    let fast = spawn_config_on(config("50ms"), ManualClock::new(T0), std::sync::Arc::new(DayFast)).await;
    // Several sweeps, seen (not assumed from a sleep).
    let sweeps = r#"sessiongate_store_operation_duration_seconds_count{backend="redis",operation="reap"}"#;
    assert!(eventually(Duration::from_secs(10), || async { fast.metric(sweeps).await >= Some(3.0) }).await);
    assert_eq!(fast.metric("sessiongate_sessions_expired_pending").await, Some(0.0));
    assert_eq!(right.get(&alice, &format!("/v1/sessions/{id}")).await.status(), StatusCode::OK);
    fast.stop().await.unwrap();

    let day = ManualClock::new(SystemClock.now_ms() + 86_400_000);
    let unbounded = spawn_config_on(config("50ms"), day.clone(), std::sync::Arc::new(day)).await;
    let reaped = eventually(Duration::from_secs(5), || async {
        right.get(&alice, &format!("/v1/sessions/{id}")).await.status() == StatusCode::NOT_FOUND
    })
    .await;
    assert!(reaped, "the control: an unbounded clock a day ahead reaps the live session");
    unbounded.stop().await.unwrap();
}
