//! The eight lifecycle invariants of DESIGN.md §2, one test (or more) each.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const REJECT_CAP_1: &str = "[sessions]\nmax_per_user = 1\non_limit = \"reject\"\nidle_ttl = \"60s\"";

// 1. An expired session never counts.
#[tokio::test]
async fn an_expired_session_frees_its_slot_before_any_reaper_sweep() {
    // The reaper runs once at start-up, then not for an hour.
    let app = spawn_app_with(REJECT_CAP_1).await;
    let alice = token("alice");
    app.create_ok(&alice, "general").await;
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::TOO_MANY_REQUESTS);
    app.clock.advance(Duration::from_secs(60));
    let r = app.create(&alice, "general").await;
    assert_eq!(r.status(), StatusCode::CREATED, "the expired session did not count");
    let s: Value = r.json().await.unwrap();
    assert!(s.get("evicted_session_id").is_none(), "nothing had to be evicted");
    assert_eq!(app.live_ids(&alice).await, vec![s["id"].as_str().unwrap().to_string()]);
    // And it was not counted as an end yet: only the reaper records expiries.
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="expired"}"#).await, Some(0.0));
}

#[tokio::test]
async fn expiry_is_the_sooner_of_idle_ttl_and_max_lifetime() {
    let app = spawn_app_with("[sessions]\nidle_ttl = \"10m\"\nmax_lifetime = \"15m\"").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    assert_eq!(s["expires_at"], "2026-11-25T10:10:00.000Z");
    let hb = format!("/v1/sessions/{}/heartbeat", s["id"].as_str().unwrap());
    app.clock.advance(Duration::from_secs(9 * 60));
    let s: Value = app.post(&alice, &hb, json!({})).await.json().await.unwrap();
    assert_eq!(s["expires_at"], "2026-11-25T10:15:00.000Z", "capped by max_lifetime");
    app.clock.advance(Duration::from_secs(6 * 60));
    assert_problem(app.post(&alice, &hb, json!({})).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

// 2. Expired sessions are removed, and each is counted once.
#[tokio::test]
async fn the_reaper_removes_expired_sessions_and_counts_each_once() {
    let app = spawn_app_with("[sessions]\nidle_ttl = \"60s\"\nreaper_interval = \"20ms\"").await;
    let alice = token("alice");
    for _ in 0..3 {
        app.create_ok(&alice, "general").await;
    }
    app.create_ok(&token("bob"), "research").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.metric(r#"sessiongate_sessions_active{tool_set="general"}"#).await == Some(3.0)
        })
        .await,
        "active gauge reports live sessions"
    );
    app.clock.advance(Duration::from_secs(61));
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.metric(r#"sessiongate_sessions_ended_total{reason="expired"}"#).await == Some(4.0)
        })
        .await,
        "all four expiries counted"
    );
    // Several more sweeps later (seen, not assumed from a sleep), still exactly four.
    let sweeps = r#"sessiongate_store_operation_duration_seconds_count{backend="memory",operation="reap"}"#;
    let swept = app.metric(sweeps).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async { app.metric(sweeps).await >= Some(swept + 3.0) }).await
    );
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="expired"}"#).await, Some(4.0));
    assert_eq!(app.metric(r#"sessiongate_sessions_active{tool_set="general"}"#).await, Some(0.0));
    assert_eq!(app.metric("sessiongate_sessions_expired_pending").await, Some(0.0));
    assert_eq!(
        app.metric(r#"sessiongate_session_lifetime_seconds_count{reason="expired"}"#).await,
        Some(4.0)
    );
    // The lifetime is measured to the expiry instant, not to the sweep.
    assert_eq!(
        app.metric(r#"sessiongate_session_lifetime_seconds_sum{reason="expired"}"#).await,
        Some(240.0)
    );
    assert!(app.live_ids(&alice).await.is_empty());
}

// 3. The cap holds under concurrency.
#[tokio::test]
async fn thirty_concurrent_creates_at_cap_three_leave_exactly_three_when_rejecting() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 3\non_limit = \"reject\"").await;
    let alice = token("alice");
    let results = futures::future::join_all((0..30).map(|_| app.create(&alice, "general"))).await;
    let created = results.iter().filter(|r| r.status() == StatusCode::CREATED).count();
    let rejected = results.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((created, rejected), (3, 27));
    assert_eq!(app.live_ids(&alice).await.len(), 3);
    assert_eq!(app.metric(r#"sessiongate_session_limit_hits_total{action="rejected"}"#).await, Some(27.0));
}

#[tokio::test]
async fn thirty_concurrent_creates_at_cap_three_leave_exactly_three_when_evicting() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 3").await;
    let alice = token("alice");
    let results = futures::future::join_all((0..30).map(|_| app.create(&alice, "general"))).await;
    assert!(results.iter().all(|r| r.status() == StatusCode::CREATED));
    assert_eq!(app.live_ids(&alice).await.len(), 3);
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="evicted"}"#).await, Some(27.0));
    assert_eq!(app.metric(r#"sessiongate_sessions_created_total{tool_set="general"}"#).await, Some(30.0));
}

// 4. At the cap: evict the least recently active, or reject with Retry-After.
#[tokio::test]
async fn eviction_picks_the_least_recently_active_not_the_oldest() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 2").await;
    let alice = token("alice");
    let oldest = app.create_ok(&alice, "general").await;
    app.clock.advance(Duration::from_secs(1));
    let newer = app.create_ok(&alice, "general").await;
    app.clock.advance(Duration::from_secs(1));
    // The oldest is used again; the newer one is now the least recently active.
    let hb = format!("/v1/sessions/{}/heartbeat", oldest["id"].as_str().unwrap());
    assert_eq!(app.post(&alice, &hb, json!({})).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(1));
    let third = app.create_ok(&alice, "research").await;
    assert_eq!(third["evicted_session_id"], newer["id"]);
    let mut live = app.live_ids(&alice).await;
    live.sort();
    let mut expected =
        vec![oldest["id"].as_str().unwrap().to_string(), third["id"].as_str().unwrap().to_string()];
    expected.sort();
    assert_eq!(live, expected);
    assert_eq!(app.metric(r#"sessiongate_session_limit_hits_total{action="evicted"}"#).await, Some(1.0));
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="evicted"}"#).await, Some(1.0));
}

#[tokio::test]
async fn reject_answers_429_with_retry_after_until_the_soonest_expiry() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 2\non_limit = \"reject\"\nidle_ttl = \"60s\"").await;
    let alice = token("alice");
    let first = app.create_ok(&alice, "general").await;
    app.clock.advance(Duration::from_secs(10));
    let second = app.create_ok(&alice, "general").await;
    app.clock.advance_ms(5_500);
    // The first expires at +60 s, i.e. 44.5 s from now: rounded up, never early.
    let r = app.create(&alice, "general").await;
    assert_eq!(r.headers()["retry-after"], "45");
    let body = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "MAX_SESSIONS_EXCEEDED").await;
    assert_eq!(body["live_session_ids"], json!([first["id"], second["id"]]));
    assert_eq!(body["retry_after"], 45);
    assert!(body["suggestion"].as_str().unwrap().contains("DELETE"));
    // A client that waits exactly Retry-After is admitted.
    app.clock.advance(Duration::from_secs(45));
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::CREATED);
}

// 5. Migration keeps the slot.
#[tokio::test]
async fn migration_keeps_the_id_and_the_slot_and_resets_the_conversation() {
    let app = spawn_app_with(REJECT_CAP_1).await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let id = s["id"].as_str().unwrap();
    let q = format!("/v1/sessions/{id}/queries");
    app.post(&alice, &q, json!({"input": "one"})).await;
    app.post(&alice, &q, json!({"input": "two"})).await;
    app.clock.advance(Duration::from_secs(5));
    // At the cap, migrating still works: it never frees or takes a slot.
    let r = app.patch(&alice, &format!("/v1/sessions/{id}"), json!({"tool_set": "research"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["id"], s["id"]);
    assert_eq!(m["tool_set"], "research");
    assert_eq!(m["conversation_turns"], 0);
    assert_eq!(m["migrations"], 1);
    assert_eq!(m["created_at"], s["created_at"]);
    assert_eq!(m["last_active_at"], "2026-11-25T10:00:05.000Z");
    assert_eq!(
        app.create(&alice, "general").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "slot still held"
    );
    let r: Value = app.post(&alice, &q, json!({"input": "three"})).await.json().await.unwrap();
    assert_eq!(r["turn"], 1, "the conversation started over");
    assert_eq!(r["tool_set"], "research");
    assert_eq!(
        app.metric(r#"sessiongate_session_migrations_total{from_tool_set="general",to_tool_set="research"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="deleted"}"#).await, Some(0.0));
}

#[tokio::test]
async fn migrating_to_the_current_tool_set_is_only_activity() {
    let app = spawn_app().await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let id = s["id"].as_str().unwrap();
    app.post(&alice, &format!("/v1/sessions/{id}/queries"), json!({"input": "x"})).await;
    let m: Value = app
        .patch(&alice, &format!("/v1/sessions/{id}"), json!({"tool_set": "general"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((m["migrations"].as_u64(), m["conversation_turns"].as_u64()), (Some(0), Some(1)));
}

// 6. Idempotent create.
#[tokio::test]
async fn the_same_idempotency_key_replays_the_original_response_even_after_the_session_ended() {
    let app = spawn_app().await;
    let alice = token("alice");
    let send = |body: Value, key: &'static str, tok: String| {
        let c = app
            .client
            .post(app.url("/v1/sessions"))
            .bearer_auth(tok)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { c.send().await.unwrap() }
    };
    let first = send(json!({"tool_set": "general"}), "k-1", alice.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    app.clock.advance(Duration::from_secs(3));
    let again = send(json!({"tool_set": "general"}), "k-1", alice.clone()).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.headers()["location"],
        format!("/v1/sessions/{}", first["id"].as_str().unwrap()).as_str()
    );
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the original response, byte for byte");
    assert_eq!(app.live_ids(&alice).await.len(), 1, "no second session");

    app.delete(&alice, &format!("/v1/sessions/{}", first["id"].as_str().unwrap())).await;
    let after_end = send(json!({"tool_set": "general"}), "k-1", alice.clone()).await;
    assert_eq!(after_end.headers()["idempotent-replayed"], "true");
    assert_eq!(after_end.json::<Value>().await.unwrap(), first);

    let conflict = send(json!({"tool_set": "research"}), "k-1", alice.clone()).await;
    assert_problem(conflict, StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT").await;

    // Keys are per user: bob's k-1 is his own.
    let bobs = send(json!({"tool_set": "general"}), "k-1", token("bob")).await;
    assert!(bobs.headers().get("idempotent-replayed").is_none());
    assert_ne!(bobs.json::<Value>().await.unwrap()["id"], first["id"]);
}

#[tokio::test]
async fn an_idempotency_key_expires_after_its_ttl() {
    let app = spawn_app_with("[sessions]\nidempotency_ttl = \"1m\"").await;
    let alice = token("alice");
    let send = || {
        let c = app
            .client
            .post(app.url("/v1/sessions"))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "k")
            .json(&json!({"tool_set": "general"}));
        async move { c.send().await.unwrap() }
    };
    let first: Value = send().await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(61));
    let r = send().await;
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_ne!(r.json::<Value>().await.unwrap()["id"], first["id"]);
}

#[tokio::test]
async fn an_eviction_is_replayed_with_the_same_evicted_id() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 1").await;
    let alice = token("alice");
    let victim = app.create_ok(&alice, "general").await;
    let send = || {
        let c = app
            .client
            .post(app.url("/v1/sessions"))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "evict-1")
            .json(&json!({"tool_set": "general"}));
        async move { c.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = send().await;
    assert_eq!(first["evicted_session_id"], victim["id"]);
    assert_eq!(send().await, first);
    assert_eq!(
        app.metric(r#"sessiongate_sessions_ended_total{reason="evicted"}"#).await,
        Some(1.0),
        "evicted once"
    );
}

// 7. Activity extends life.
#[tokio::test]
async fn heartbeat_query_and_migrate_each_extend_life() {
    let app = spawn_app_with("[sessions]\nidle_ttl = \"60s\"").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let base = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    app.clock.advance(Duration::from_secs(50));
    let hb: Value = app.post(&alice, &format!("{base}/heartbeat"), json!({})).await.json().await.unwrap();
    assert_eq!(hb["last_active_at"], "2026-11-25T10:00:50.000Z");
    assert_eq!(hb["expires_at"], "2026-11-25T10:01:50.000Z");
    app.clock.advance(Duration::from_secs(50));
    assert_eq!(
        app.post(&alice, &format!("{base}/queries"), json!({"input": "x"})).await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(50));
    let m: Value = app.patch(&alice, &base, json!({"tool_set": "coding"})).await.json().await.unwrap();
    assert_eq!(m["last_active_at"], "2026-11-25T10:02:30.000Z");
    assert_eq!(m["expires_at"], "2026-11-25T10:03:30.000Z");
    app.clock.advance(Duration::from_secs(59));
    assert_eq!(
        app.get(&alice, &base).await.status(),
        StatusCode::OK,
        "still live after 209 s of a 60 s idle TTL"
    );
    assert_eq!(app.metric("sessiongate_session_heartbeats_total").await, Some(1.0));
}

#[tokio::test]
async fn reading_a_session_does_not_extend_it() {
    let app = spawn_app_with("[sessions]\nidle_ttl = \"60s\"").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    app.clock.advance(Duration::from_secs(30));
    let got: Value = app.get(&alice, &path).await.json().await.unwrap();
    assert_eq!(got["expires_at"], s["expires_at"]);
}

// 8. Delete and revoke free the slot at once, and every end is counted.
#[tokio::test]
async fn delete_frees_the_slot_at_once() {
    let app = spawn_app_with(REJECT_CAP_1).await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    assert_eq!(
        app.delete(&alice, &format!("/v1/sessions/{}", s["id"].as_str().unwrap())).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::CREATED);
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="deleted"}"#).await, Some(1.0));
}

#[tokio::test]
async fn admin_revoke_frees_every_slot_at_once() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 2\non_limit = \"reject\"").await;
    let alice = token("alice");
    let a = app.create_ok(&alice, "general").await;
    let b = app.create_ok(&alice, "research").await;
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = app.delete(&admin_token("oncall"), "/v1/admin/users/alice/sessions").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"], "alice");
    let mut revoked: Vec<String> = serde_json::from_value(body["revoked_session_ids"].clone()).unwrap();
    revoked.sort();
    let mut expected = vec![a["id"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert!(app.live_ids(&alice).await.is_empty());
    assert_eq!(app.create(&alice, "general").await.status(), StatusCode::CREATED);
    assert_eq!(app.metric(r#"sessiongate_sessions_ended_total{reason="revoked"}"#).await, Some(2.0));
}
