//! The on-call levers: list any user's live sessions, revoke them all.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn an_admin_lists_any_users_live_sessions_only() {
    let app = spawn_app_with("[sessions]\nidle_ttl = \"60s\"").await;
    let alice = token("alice");
    let old = app.create_ok(&alice, "general").await;
    app.clock.advance(Duration::from_secs(30));
    let live = app.create_ok(&alice, "research").await;
    app.clock.advance(Duration::from_secs(31));
    let body: Value =
        app.get(&admin_token("oncall"), "/v1/admin/sessions?user=alice").await.json().await.unwrap();
    let ids: Vec<&Value> = body["sessions"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&live["id"]], "the expired {} is not listed", old["id"]);
}

#[tokio::test]
async fn the_user_parameter_is_required() {
    let app = spawn_app().await;
    let r = app.get(&admin_token("oncall"), "/v1/admin/sessions").await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED").await;
    let r = app.get(&admin_token("oncall"), "/v1/admin/sessions?user=").await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn revoking_a_user_without_sessions_is_a_harmless_empty_result() {
    let app = spawn_app().await;
    let r = app.delete(&admin_token("oncall"), "/v1/admin/users/nobody/sessions").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["revoked_session_ids"], serde_json::json!([]));
}

#[tokio::test]
async fn revoke_leaves_other_users_alone() {
    let app = spawn_app().await;
    app.create_ok(&token("alice"), "general").await;
    let bobs = app.create_ok(&token("bob"), "general").await;
    app.delete(&admin_token("oncall"), "/v1/admin/users/alice/sessions").await;
    assert_eq!(app.live_ids(&token("bob")).await, vec![bobs["id"].as_str().unwrap().to_string()]);
}
