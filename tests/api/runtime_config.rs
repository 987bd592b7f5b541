//! `GET`/`PATCH /v1/admin/config`: JSON Merge Patch over the runtime document,
//! validated, applied at once, persisted, and propagated between replicas.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn patch(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url("/v1/admin/config"))
        .bearer_auth(admin_token("oncall"))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

const CAP_1: &str = "[sessions]\nmax_per_user = 1\non_limit = \"reject\"\n\
    [[rate_limit.policies]]\nname = \"reads\"\nlimit = 100\nwindow = \"60s\"\nroutes = [\"GET /v1/sessions\"]";

#[tokio::test]
async fn the_document_shows_the_runtime_part_with_policies_by_name() {
    let app = spawn_app_with(CAP_1).await;
    let r = app.get(&admin_token("oncall"), "/v1/admin/config").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({
            "sessions": {"max_per_user": 1, "idle_ttl": "30m", "max_lifetime": "24h",
                         "on_limit": "reject", "idempotency_ttl": "24h",
                         "max_idempotency_keys_per_user": 1000},
            "rate_limit": {"policies": {"reads": {"limit": 100, "window": "60s"}}}
        })
    );
    assert_problem(app.get(&token("alice"), "/v1/admin/config").await, StatusCode::FORBIDDEN, "FORBIDDEN")
        .await;
}

#[tokio::test]
async fn a_patch_is_in_force_at_once_and_null_restores_the_file() {
    let app = spawn_app_with(CAP_1).await;
    let alice = token("alice");
    app.create_ok(&alice, "general").await;
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::TOO_MANY_REQUESTS);

    let r = patch(&app, json!({"sessions": {"max_per_user": 2}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["sessions"]["max_per_user"], 2);
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::CREATED);

    let r = patch(&app, json!({"sessions": {"max_per_user": null}})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["sessions"]["max_per_user"], 1, "the file's value is back");
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.metric(r#"sessiongate_config_changes_total{source="api"}"#).await, Some(2.0));
}

#[tokio::test]
async fn an_invalid_patch_is_422_and_changes_nothing() {
    let app = spawn_app_with(CAP_1).await;
    let before: Value = app.get(&admin_token("oncall"), "/v1/admin/config").await.json().await.unwrap();
    for (body, field) in [
        (json!({"sessions": {"max_per_user": 0, "idle_ttl": "5m"}}), "sessions.max_per_user"),
        (json!({"sessions": {"reaper_interval": "5s"}}), "sessions.reaper_interval"),
        (json!({"server": {"listen": "0.0.0.0:1"}}), "server"),
        (json!({"rate_limit": {"policies": {"reads": {"limit": "many"}}}}), "rate_limit.policies.reads"),
        (json!({"rate_limit": {"policies": {"ghost": {"limit": 3}}}}), "rate_limit.policies.ghost"),
        (
            json!({"rate_limit": {"policies": {"reads": {"limit": 3, "window": "1.5s"}}}}),
            "rate_limit.policies.reads.window",
        ),
    ] {
        let problem = assert_problem(
            patch(&app, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
        )
        .await;
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }
    let after: Value = app.get(&admin_token("oncall"), "/v1/admin/config").await.json().await.unwrap();
    assert_eq!(after, before);
    assert_eq!(app.metric(r#"sessiongate_config_changes_total{source="api"}"#).await, Some(0.0));
}

#[tokio::test]
async fn policy_limits_and_windows_change_live() {
    let app = spawn_app_with(CAP_1).await;
    app.clock.advance_ms(100);
    let alice = token("alice");
    patch(&app, json!({"rate_limit": {"policies": {"reads": {"limit": 2}}}})).await;
    assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::OK);
    assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::OK);
    let r = app.get(&alice, "/v1/sessions").await;
    assert_eq!(r.headers()["ratelimit-policy"], r#""reads";q=2;w=60"#);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A new window length starts from fresh counters.
    patch(&app, json!({"rate_limit": {"policies": {"reads": {"window": "10s"}}}})).await;
    let r = app.get(&alice, "/v1/sessions").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["ratelimit-policy"], r#""reads";q=2;w=10"#);
}

#[tokio::test]
async fn overrides_persist_to_the_file_and_win_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overrides.json");
    let cfg = format!("{CAP_1}\n[store]\noverrides_file = {:?}", file.to_str().unwrap());
    let first = spawn_app_with(&cfg).await;
    assert_eq!(patch(&first, json!({"sessions": {"max_per_user": 4}})).await.status(), StatusCode::OK);
    first.stop().await.unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["overrides"], json!({"sessions": {"max_per_user": 4}}));

    let second = spawn_app_with(&cfg).await;
    let doc: Value = second.get(&admin_token("oncall"), "/v1/admin/config").await.json().await.unwrap();
    assert_eq!(doc["sessions"]["max_per_user"], 4, "saved overrides win over the file");
    assert_eq!(second.metric(r#"sessiongate_config_changes_total{source="startup"}"#).await, Some(1.0));

    // A file that no longer parses stops start-up, naming it: serving
    // without it would refuse every PATCH (each reads it first).
    std::fs::write(&file, b"{\"version\": 1, \"overr").unwrap();
    let built = sessiongate::startup::Application::build(test_config(&cfg), Default::default()).await;
    let err = format!("{:#}", built.err().expect("start-up refused"));
    assert!(err.contains("overrides_file") && err.contains("overrides.json"), "{err}");
}

#[tokio::test]
async fn saved_overrides_that_no_longer_fit_the_file_are_not_saved_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overrides.json");
    let store = format!("[store]\noverrides_file = {:?}", file.to_str().unwrap());
    let first = spawn_app_with(&format!("{CAP_1}\n{store}")).await;
    let saved = json!({"sessions": {"max_per_user": 4}, "rate_limit": {"policies": {"reads": {"limit": 5}}}});
    assert_eq!(patch(&first, saved.clone()).await.status(), StatusCode::OK);
    first.stop().await.unwrap();

    // The file no longer has the policy `reads`: nothing saved is applied...
    let second = spawn_app_with(&format!("[sessions]\nmax_per_user = 1\n{store}")).await;
    let doc: Value = second.get(&admin_token("oncall"), "/v1/admin/config").await.json().await.unwrap();
    assert_eq!(doc["sessions"]["max_per_user"], 1);
    // ...and a PATCH that leaves the stale part is refused, naming it, rather
    // than saving over the other overrides.
    let problem = assert_problem(
        patch(&second, json!({"sessions": {"idle_ttl": "10m"}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(problem.to_string().contains("rate_limit.policies.reads"), "{problem}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk["overrides"], saved);
    // Removing the stale part applies the rest.
    let r = patch(&second, json!({"rate_limit": {"policies": {"reads": null}}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["sessions"]["max_per_user"], 4);
}

#[tokio::test]
async fn patches_on_two_replicas_at_once_both_survive() {
    let redis = crate::redis_server::RedisServer::start();
    let cfg = format!(
        "{CAP_1}\n[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"cas\"",
        redis.url()
    );
    let a = spawn_app_with(&cfg).await;
    let b = spawn_app_with(&cfg).await;
    // Faster than B's 500 ms poll: B has not seen A's change when it patches.
    assert_eq!(patch(&a, json!({"sessions": {"max_per_user": 20}})).await.status(), StatusCode::OK);
    let r = patch(&b, json!({"sessions": {"idle_ttl": "5m"}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["sessions"]["max_per_user"], 20, "A's change was not lost");
    assert_eq!(doc["sessions"]["idle_ttl"], "5m");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            let d: Value = a.get(&admin_token("oncall"), "/v1/admin/config").await.json().await.unwrap();
            d["sessions"]["idle_ttl"] == "5m" && d["sessions"]["max_per_user"] == 20
        })
        .await,
        "A converges on both"
    );
}

fn on_redis(redis: &crate::redis_server::RedisServer, prefix: &str) -> String {
    format!(
        "{CAP_1}\n[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"",
        redis.url()
    )
}

async fn max_per_user(app: &TestApp) -> Value {
    let d: Value = app.get(&admin_token("oncall"), "/v1/admin/config").await.json().await.unwrap();
    d["sessions"]["max_per_user"].clone()
}

/// The store is the truth, also when it goes back: with the saved overrides
/// lost (a Redis flushed or failed over), every replica follows it back to
/// the file's values, and a PATCH works again at once (it used to be refused
/// as `503` on every replica that had seen a higher version, until each was
/// restarted).
#[tokio::test]
async fn replicas_follow_a_store_that_lost_its_overrides_and_patches_still_work() {
    use std::time::Duration;
    let redis = crate::redis_server::RedisServer::start();
    let (a, b) =
        (spawn_app_with(&on_redis(&redis, "lost")).await, spawn_app_with(&on_redis(&redis, "lost")).await);
    assert_eq!(patch(&a, json!({"sessions": {"max_per_user": 20}})).await.status(), StatusCode::OK);
    assert!(eventually(Duration::from_secs(3), || async { max_per_user(&b).await == 20 }).await);

    let port = redis.port.to_string();
    let del =
        std::process::Command::new("redis-cli").args(["-p", &port, "del", "lost:config"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&del.stdout).trim(), "1");
    for app in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(3), || async { max_per_user(app).await == 1 }).await,
            "back to the file's value"
        );
    }
    let r = patch(&b, json!({"sessions": {"max_per_user": 7}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(eventually(Duration::from_secs(3), || async { max_per_user(&a).await == 7 }).await);
}

/// A PATCH whose request is dropped (the admin's client gave up while Redis
/// hung) still runs to its end once started: saved, in force here, and
/// counted as the admin's (`api`), not found later by the watcher as another
/// replica's change, or half done.
#[tokio::test]
async fn a_patch_whose_client_went_away_still_completes_here() {
    use std::time::Duration;
    let redis = crate::redis_server::RedisServer::start();
    // A roomy command_timeout: the PATCH waits on the paused Redis while the
    // test sees it in flight and drops it, however slow the machine.
    let app = spawn_app_with(&format!("{}\ncommand_timeout = \"10s\"", on_redis(&redis, "gone"))).await;
    assert_eq!(max_per_user(&app).await, 1);
    redis.pause();
    let dropped = app
        .client
        .patch(app.url("/v1/admin/config"))
        .bearer_auth(admin_token("oncall"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"sessions": {"max_per_user": 9}}).to_string());
    app.abandon(dropped, "PATCH").await;
    redis.resume();
    assert!(eventually(Duration::from_secs(5), || async { max_per_user(&app).await == 9 }).await);
    assert_eq!(app.metric(r#"sessiongate_config_changes_total{source="api"}"#).await, Some(1.0));
    assert_eq!(app.metric(r#"sessiongate_config_changes_total{source="replica"}"#).await, Some(0.0));
}

/// A PATCH that changes nothing is answered with the document and saves,
/// applies and counts nothing (each replica would otherwise count it again).
#[tokio::test]
async fn a_patch_that_changes_nothing_is_not_a_change() {
    let app = spawn_app_with(CAP_1).await;
    // (Setting a value the file already has is a change: the override then
    // holds it if the file changes. Removing an override there is none of is not.)
    for body in [json!({}), json!({"sessions": {"idle_ttl": null}})] {
        let r = patch(&app, body).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap()["sessions"]["max_per_user"], 1);
    }
    assert_eq!(app.metric(r#"sessiongate_config_changes_total{source="api"}"#).await, Some(0.0));
}
