//! The sessions API end to end: shapes, headers and the happy paths.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn tool_sets_are_listed_from_config() {
    let app = spawn_app_with(
        r#"[[tool_sets]]
name = "research"
description = "Web research"
tools = ["search", "browser"]
[[tool_sets]]
name = "coding"
tools = ["python"]"#,
    )
    .await;
    let r = app.get(&token("alice"), "/v1/tool-sets").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"tool_sets": [
            {"name": "research", "description": "Web research", "tools": ["search", "browser"]},
            {"name": "coding", "description": "", "tools": ["python"]}
        ]})
    );
}

#[tokio::test]
async fn create_returns_201_location_and_the_session() {
    let app = spawn_app().await;
    let r = app.create(&token("alice"), "general").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let s: Value = r.json().await.unwrap();
    let id = s["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/sessions/{id}"));
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7, "UUIDv7");
    assert_eq!(s["user_id"], "alice");
    assert_eq!(s["tool_set"], "general");
    assert_eq!(s["created_at"], "2026-11-25T10:00:00.000Z");
    assert_eq!(s["last_active_at"], "2026-11-25T10:00:00.000Z");
    // Default idle_ttl is 30m, max_lifetime 24h.
    assert_eq!(s["expires_at"], "2026-11-25T10:30:00.000Z");
    assert_eq!(s["conversation_turns"], 0);
    assert_eq!(s["migrations"], 0);
    assert!(s.get("evicted_session_id").is_none());

    let got: Value = app.get(&token("alice"), &location).await.json().await.unwrap();
    assert_eq!(got, s);
}

#[tokio::test]
async fn timestamps_have_millisecond_precision() {
    let app = spawn_app().await;
    app.clock.advance_ms(123);
    let s = app.create_ok(&token("alice"), "general").await;
    assert_eq!(s["created_at"], "2026-11-25T10:00:00.123Z");
}

#[tokio::test]
async fn list_is_wrapped_and_holds_only_the_callers_sessions() {
    let app = spawn_app().await;
    let a1 = app.create_ok(&token("alice"), "general").await;
    app.clock.advance_ms(1);
    let a2 = app.create_ok(&token("alice"), "research").await;
    app.create_ok(&token("bob"), "general").await;
    let body: Value = app.get(&token("alice"), "/v1/sessions").await.json().await.unwrap();
    let ids: Vec<&str> =
        body["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![a1["id"].as_str().unwrap(), a2["id"].as_str().unwrap()], "oldest first");
}

#[tokio::test]
async fn queries_count_turns_and_echo_deterministically() {
    let app = spawn_app().await;
    let s = app.create_ok(&token("alice"), "general").await;
    let path = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    for turn in 1..=3 {
        let r = app.post(&token("alice"), &path, json!({"input": format!("hello {turn}")})).await;
        assert_eq!(r.status(), StatusCode::OK);
        let q: Value = r.json().await.unwrap();
        assert_eq!(q["session_id"], s["id"]);
        assert_eq!(q["turn"], turn);
        assert_eq!(q["tool_set"], "general");
        assert_eq!(q["output"], format!("[general turn {turn} via search,calculator] hello {turn}"));
        assert!(q["duration_ms"].is_u64());
    }
    let got: Value = app
        .get(&token("alice"), &format!("/v1/sessions/{}", s["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["conversation_turns"], 3);
}

#[tokio::test]
async fn concurrent_queries_get_distinct_turns() {
    let app = spawn_app().await;
    let s = app.create_ok(&token("alice"), "general").await;
    let path = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    let alice = token("alice");
    let futures = (0..20).map(|i| app.post(&alice, &path, json!({"input": format!("q{i}")})));
    let mut turns: Vec<u64> = Vec::new();
    for r in futures::future::join_all(futures).await {
        assert_eq!(r.status(), StatusCode::OK);
        turns.push(r.json::<Value>().await.unwrap()["turn"].as_u64().unwrap());
    }
    turns.sort();
    assert_eq!(turns, (1..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn delete_answers_204_and_the_session_is_gone() {
    let app = spawn_app().await;
    let s = app.create_ok(&token("alice"), "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    let r = app.delete(&token("alice"), &path).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.text().await.unwrap(), "");
    assert_problem(app.get(&token("alice"), &path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_problem(app.delete(&token("alice"), &path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn another_users_session_is_a_404_on_every_verb() {
    let app = spawn_app().await;
    let s = app.create_ok(&token("alice"), "general").await;
    let id = s["id"].as_str().unwrap();
    let bob = token("bob");
    let path = format!("/v1/sessions/{id}");
    for r in [
        app.get(&bob, &path).await,
        app.patch(&bob, &path, json!({"tool_set": "research"})).await,
        app.post(&bob, &format!("{path}/heartbeat"), json!({})).await,
        app.post(&bob, &format!("{path}/queries"), json!({"input": "hi"})).await,
        app.delete(&bob, &path).await,
    ] {
        let body = assert_problem(r, StatusCode::NOT_FOUND, "NOT_FOUND").await;
        assert_eq!(body["detail"], "no such session", "same answer as a missing session");
    }
    // A session that never existed answers identically.
    let missing = format!("/v1/sessions/{}", uuid::Uuid::now_v7());
    let body = assert_problem(app.get(&bob, &missing).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(body["detail"], "no such session");
    // Alice's session is untouched.
    let got: Value = app.get(&token("alice"), &path).await.json().await.unwrap();
    assert_eq!(got, s);
}
