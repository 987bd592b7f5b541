//! Redis Cluster faults, on a real cluster of the test's own: a master killed
//! under traffic (the replica takes over), slots migrated under traffic, a
//! node added, seeds missing at start-up, and what is not a usable cluster.

use crate::helpers::{TestApp, eventually, spawn_app_with, token};
use crate::redis_server::{RedisCluster, RedisServer, cli};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A large window on every route, and a small one on `GET /v1/tool-sets`
/// (which the traffic never calls) to show the limiter exact afterwards.
fn config(urls: &[String]) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[store]\nbackend = \"redis\"\nredis_cluster_urls = [{}]\nkey_prefix = \"f\"\ncommand_timeout = \"500ms\"\n\
         [sessions]\nidle_ttl = \"10m\"\nreaper_interval = \"100ms\"\n\
         [[rate_limit.policies]]\nname = \"p\"\nlimit = 1000000\nwindow = \"60s\"\n\
         [[rate_limit.policies]]\nname = \"listing\"\nlimit = 5\nwindow = \"60s\"\nroutes = [\"GET /v1/tool-sets\"]",
        urls.join(", ")
    )
}

/// The hash slot of a principal's rate-limit counters.
fn slot_of_principal(cluster: &RedisCluster, principal: &str) -> u16 {
    let tag = format!("{{p:{principal}}}");
    cli(cluster.nodes[0].port, &["cluster", "keyslot", &tag]).trim().parse().expect("a slot")
}

/// The hash slot of a user's sessions (their group's tag).
fn slot_of_user(cluster: &RedisCluster, user: &str) -> u16 {
    let tag = format!("{{g:{}}}", sessiongate::store::redis::group_of(user));
    cli(cluster.nodes[0].port, &["cluster", "keyslot", &tag]).trim().parse().expect("a slot")
}

struct User {
    name: String,
    token: String,
    session: String,
}

/// One answer seen by the traffic.
struct Seen {
    user: usize,
    at: Instant,
    status: StatusCode,
    took: Duration,
    retry_after: bool,
    code: String,
    query: bool,
}

/// Every user reads its session in a loop, with a heartbeat (a write) every
/// tenth time and, with `queries`, a query every fifth, until `stop`.
async fn traffic(
    app: Arc<TestApp>,
    users: Arc<Vec<User>>,
    queries: bool,
    stop: Arc<AtomicBool>,
) -> Vec<Seen> {
    let tasks: Vec<_> = (0..users.len())
        .map(|u| {
            let (app, users, stop) = (app.clone(), users.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let user = &users[u];
                    let started = Instant::now();
                    let query = queries && n % 10 == 5;
                    let r = if n.is_multiple_of(10) {
                        let path = format!("/v1/sessions/{}/heartbeat", user.session);
                        app.post(&user.token, &path, json!({})).await
                    } else if query {
                        let path = format!("/v1/sessions/{}/queries", user.session);
                        app.post(&user.token, &path, json!({"input": "hi"})).await
                    } else {
                        app.get(&user.token, &format!("/v1/sessions/{}", user.session)).await
                    };
                    let status = r.status();
                    let retry_after = r.headers().contains_key("retry-after");
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let code = body["code"].as_str().unwrap_or("").to_owned();
                    seen.push(Seen {
                        user: u,
                        at: started,
                        status,
                        took: started.elapsed(),
                        retry_after,
                        code,
                        query,
                    });
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("traffic task"));
    }
    all
}

/// `n` users with a session each, and `TURNS` queries counted in it.
async fn open_sessions(app: &TestApp, n: usize) -> Vec<User> {
    let mut users = Vec::new();
    for i in 0..n {
        let name = format!("user-{i}");
        let token = token(&name);
        let session = app.create_ok(&token, "general").await["id"].as_str().unwrap().to_owned();
        for _ in 0..TURNS {
            let r =
                app.post(&token, &format!("/v1/sessions/{session}/queries"), json!({"input": "hi"})).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        users.push(User { name, token, session });
    }
    users
}

const TURNS: u64 = 3;

/// Each user's session: same id, and the turns the traffic counted.
async fn turns(app: &TestApp, users: &[User]) -> Vec<u64> {
    let mut turns = Vec::new();
    for u in users {
        let r = app.get(&u.token, &format!("/v1/sessions/{}", u.session)).await;
        assert_eq!(r.status(), StatusCode::OK, "{}'s session is still there", u.name);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["id"], u.session.as_str());
        turns.push(body["conversation_turns"].as_u64().unwrap());
    }
    turns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_only_its_users_wait() {
    let mut cluster = RedisCluster::start_with(3, 1);
    let app = Arc::new(spawn_app_with(&config(&cluster.urls())).await);
    let users = Arc::new(open_sessions(&app, 24).await);
    // The master with most users' sessions, and the replica that will take
    // its place.
    let owner: Vec<usize> =
        users.iter().map(|u| cluster.owner_of(slot_of_user(&cluster, &u.name), 0).expect("served")).collect();
    let victim = (0..cluster.nodes.len()).max_by_key(|i| owner.iter().filter(|o| *o == i).count()).unwrap();
    let victim_id = cluster.node_id(victim);
    let heir = (0..cluster.nodes.len())
        .find(|&i| {
            cli(cluster.nodes[i].port, &["cluster", "nodes"])
                .lines()
                .any(|l| l.contains("myself") && l.contains(&format!("slave {victim_id}")))
        })
        .expect("the victim has a replica");
    let on_victim: Vec<bool> = owner.iter().map(|&o| o == victim).collect();
    let limited_on_victim = users
        .iter()
        .filter(|u| cluster.owner_of(slot_of_principal(&cluster, &u.name), 0) == Some(victim))
        .count();
    assert!(on_victim.iter().any(|&v| v) && on_victim.iter().any(|&v| !v), "users on both sides");

    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(traffic(app.clone(), users.clone(), false, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Everything acknowledged so far is on the replicas too.
    let synced = tokio::task::spawn_blocking({
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ports.iter().all(|&p| {
                let info = cli(p, &["info", "replication"]);
                !info.contains("role:slave") || info.contains("master_link_status:up")
            }) {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    synced.await.unwrap();
    app.expect_failures();
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let cluster = Arc::new(cluster);
    let healed_at = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || {
            let survivor = (0..cluster.nodes.len()).find(|&i| i != victim && i != heir).unwrap();
            cluster.wait_until(Duration::from_secs(20), "the replica takes over", || {
                cluster.is_master(heir) && cluster.info(survivor).contains("cluster_state:ok")
            });
            Instant::now()
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.unwrap();

    let failover = healed_at - killed_at;
    let mut last_failure: Option<Instant> = None;
    let (mut total, mut failed) = (0, 0);
    for s in &seen {
        total += 1;
        if s.status == StatusCode::OK {
            continue;
        }
        failed += 1;
        assert!(
            on_victim[s.user],
            "user {} is on a healthy master but got {} {} after {:?}",
            s.user, s.status, s.code, s.took
        );
        assert_eq!(s.status, StatusCode::SERVICE_UNAVAILABLE, "{}", s.code);
        assert_eq!(s.code, "STORE_UNAVAILABLE");
        assert!(s.retry_after, "a 503 carries Retry-After");
        assert!(
            s.took < COMMAND_TIMEOUT + Duration::from_millis(300),
            "a 503 within the timeout: {:?}",
            s.took
        );
        last_failure = Some(last_failure.map_or(s.at, |l| l.max(s.at)));
    }
    let slowest_healthy = seen.iter().filter(|s| !on_victim[s.user]).map(|s| s.took).max().unwrap();
    assert!(slowest_healthy < COMMAND_TIMEOUT, "healthy users never wait: {slowest_healthy:?}");
    let recovered = last_failure.map(|l| l.saturating_duration_since(healed_at));
    eprintln!(
        "failover: cluster healed {failover:?} after the kill; last failure {recovered:?} after that; \
         {failed} of {total} requests failed; slowest healthy request {slowest_healthy:?}"
    );
    assert!(
        recovered.is_none_or(|r| r < Duration::from_secs(3)),
        "served again within seconds of cluster_state:ok: {recovered:?}"
    );
    // Nothing lost: every session is there, with the turns it had.
    assert_eq!(turns(&app, &users).await, vec![TURNS; users.len()]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.metric(r#"sessiongate_store_up{backend="redis"}"#).await == Some(1.0)
        })
        .await,
        "the store is up again"
    );
    let changed =
        app.metric(r#"sessiongate_store_topology_refreshes_total{outcome="changed"}"#).await.unwrap();
    assert!(changed >= 2.0, "the first map and the failover's: {changed}");
    // The limiter followed on_store_error ("allow") for the principals whose
    // counters were on the dead master, and counts exactly on its heir now.
    let store_errors = app.metric(r#"sessiongate_ratelimit_store_errors_total{policy="p"}"#).await.unwrap();
    assert_eq!(
        store_errors > 0.0,
        limited_on_victim > 0,
        "{limited_on_victim} principals' counters were on the victim"
    );
    let heir_principal = (0..1000)
        .map(|i| format!("counted-{i}"))
        .find(|p| cluster.owner_of(slot_of_principal(&cluster, p), heir) == Some(heir))
        .expect("a principal whose counters live on the promoted replica");
    let t = token(&heir_principal);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.get(&t, "/v1/tool-sets").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "exactly 5 per window on the promoted node");
    // Expiry after the failover is counted once per session.
    app.clock.advance(Duration::from_secs(11 * 60));
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.metric(r#"sessiongate_sessions_ended_total{reason="expired"}"#).await == Some(24.0)
        })
        .await,
        "every session expires once: {:?}",
        app.metric(r#"sessiongate_sessions_ended_total{reason="expired"}"#).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrate_to_an_added_node_under_traffic_and_no_request_fails() {
    let cluster = RedisCluster::start();
    let app = Arc::new(spawn_app_with(&config(&cluster.urls())).await);
    let users = Arc::new(open_sessions(&app, 32).await);
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(traffic(app.clone(), users.clone(), true, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A fourth master joins, and a quarter of every slot range moves to it
    // (`redis-cli --cluster rebalance`: MIGRATE, ASK and MOVED under load).
    let (cluster, added, output) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let added = cluster.add_master();
        let output = cluster.manage(&["rebalance", "--cluster-use-empty-masters"]);
        (cluster, added, output)
    })
    .await
    .unwrap();
    assert!(output.contains("Moving"), "slots moved: {output}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.unwrap();

    let failed: Vec<String> = seen
        .iter()
        .filter(|s| s.status != StatusCode::OK)
        .map(|s| format!("user {} got {} {} after {:?}", s.user, s.status, s.code, s.took))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    // Every query counted exactly once, wherever its slot was.
    let mut queries: HashMap<usize, u64> = HashMap::new();
    for s in seen.iter().filter(|s| s.query) {
        *queries.entry(s.user).or_default() += 1;
    }
    let expected: Vec<u64> =
        (0..users.len()).map(|u| TURNS + queries.get(&u).copied().unwrap_or(0)).collect();
    assert_eq!(turns(&app, &users).await, expected);
    // The new node holds data and serves its users.
    assert!(cluster.keys_per_node()[added] > 0, "keys on the added node: {:?}", cluster.keys_per_node());
    let served =
        users.iter().filter(|u| cluster.owner_of(slot_of_user(&cluster, &u.name), 0) == Some(added)).count();
    eprintln!(
        "resharding: {} requests, none failed; {served} of {} users now on the added node",
        seen.len(),
        users.len()
    );
    let changed =
        app.metric(r#"sessiongate_store_topology_refreshes_total{outcome="changed"}"#).await.unwrap();
    assert!(changed >= 2.0, "the slot map followed the moves: {changed}");
}

#[tokio::test]
async fn seed_nodes_that_are_gone_at_start_up_are_skipped() {
    let cluster = RedisCluster::start();
    let gone = RedisServer::start();
    let gone_url = gone.url();
    drop(gone);
    let mut urls = vec![gone_url, "redis://127.0.0.1:1".to_owned()];
    urls.extend(cluster.urls().into_iter().take(1));
    let app = spawn_app_with(&config(&urls)).await;
    let ready: serde_json::Value =
        app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["store"], "up", "{ready}");
    let users = open_sessions(&app, 16).await;
    assert_eq!(turns(&app, &users).await, vec![TURNS; 16]);
    assert!(
        cluster.keys_per_node().iter().all(|&k| k > 0),
        "every node reached: {:?}",
        cluster.keys_per_node()
    );
}

#[tokio::test]
async fn a_seed_that_is_not_a_cluster_node_is_a_start_up_error_naming_it() {
    let cluster = RedisCluster::start();
    let plain = RedisServer::start();
    let mut urls = cluster.urls();
    urls.insert(1, plain.url());
    let built = sessiongate::startup::Application::build(
        crate::helpers::test_config(&config(&urls)),
        sessiongate::startup::BuildOptions { production: true, clock: None },
    )
    .await;
    let e = format!("{:#}", built.err().expect("start-up refused"));
    assert!(e.contains(&format!("entry 2 (127.0.0.1:{}) is not a cluster node", plain.port)), "{e}");
    assert!(e.contains("store.redis_cluster_urls"), "{e}");
}

#[tokio::test]
async fn slots_no_node_serves_fail_their_users_alone_and_readiness_names_them() {
    let cluster = RedisCluster::start();
    let owner = cluster.owner_of(0, 0).expect("slot 0 is served");
    let slots = cli(cluster.nodes[owner].port, &["cluster", "nodes"]);
    let range = slots
        .lines()
        .find(|l| l.contains("myself"))
        .and_then(|l| l.split_whitespace().nth(8).map(str::to_owned))
        .expect("its range");
    let (from, to) = range.split_once('-').expect("a range");
    // Each node forgets the range (DELSLOTS changes only the node's own view).
    for node in &cluster.nodes {
        assert!(cli(node.port, &["cluster", "delslotsrange", from, to]).contains("OK"));
    }
    cluster.wait_until(Duration::from_secs(10), "every node sees the hole", || {
        (0..cluster.nodes.len()).all(|i| cluster.owner_of(0, i).is_none())
    });
    let app = spawn_app_with(&config(&cluster.urls())).await;
    app.expect_failures();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "a store problem does not fail readiness");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "down");
    assert!(
        body["store_error"].as_str().unwrap().contains(&format!("slots {range} are served by no node")),
        "{body}"
    );
    let (from, to): (u16, u16) = (from.parse().unwrap(), to.parse().unwrap());
    let (mut holed, mut served) = (0, 0);
    for i in 0..24 {
        let name = format!("user-{i}");
        let slot = slot_of_user(&cluster, &name);
        let r = app.create(&token(&name), "general").await;
        if (from..=to).contains(&slot) {
            holed += 1;
            crate::helpers::assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE").await;
        } else {
            served += 1;
            assert_eq!(r.status(), StatusCode::CREATED, "{name} in slot {slot}");
        }
    }
    assert!(holed > 0 && served > 0, "users on both sides: {holed} / {served}");
}
