//! Layered rate limiting over HTTP: per-principal sliding windows with the
//! IETF headers, never-early Retry-After, shadow mode, overrides, concurrency
//! policies, and the per-IP layer in front of authentication.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

const BURST_AND_SUSTAINED: &str = r#"
[[rate_limit.policies]]
name = "burst"
limit = 3
window = "1s"
[[rate_limit.policies]]
name = "sustained"
limit = 5
window = "60s"
"#;

#[tokio::test]
async fn the_request_over_the_limit_is_a_429_with_headers_and_the_violated_policy() {
    let app = spawn_app_with(BURST_AND_SUSTAINED).await;
    // A quarter into the current buckets (the test clock starts on a boundary).
    app.clock.advance_ms(250);
    let alice = token("alice");
    for expected_r in [2, 1, 0] {
        let r = app.get(&alice, "/v1/sessions").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit-policy").unwrap(), r#""burst";q=3;w=1, "sustained";q=5;w=60"#);
        assert_eq!(header(&r, "ratelimit").unwrap(), format!(r#""burst";r={expected_r};t=1"#));
    }
    let r = app.get(&alice, "/v1/sessions").await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    assert_eq!(header(&r, "ratelimit").unwrap(), r#""burst";r=0;t=1"#);
    assert!(header(&r, "ratelimit-policy").is_some());
    let body = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    assert_eq!(body["violated_policies"], json!(["burst"]));
    assert_eq!(body["retry_after"], 1);
    // Another principal has its own quota.
    assert_eq!(app.get(&token("bob"), "/v1/sessions").await.status(), StatusCode::OK);
    assert_eq!(
        app.metric(r#"sessiongate_ratelimit_decisions_total{policy="burst",decision="limited"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        app.metric(r#"sessiongate_ratelimit_decisions_total{policy="burst",decision="allowed"}"#).await,
        Some(4.0)
    );
}

#[tokio::test]
async fn a_client_that_waits_exactly_retry_after_is_admitted() {
    let app =
        spawn_app_with("[[rate_limit.policies]]\nname = \"per-minute\"\nlimit = 4\nwindow = \"60s\"").await;
    let alice = token("alice");
    // Spread the four over the bucket, then keep asking and waiting as told.
    for _ in 0..4 {
        assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::OK);
        app.clock.advance(Duration::from_millis(7_300));
    }
    for round in 0..6 {
        let r = app.get(&alice, "/v1/sessions").await;
        if r.status() == StatusCode::OK && round > 0 {
            continue;
        }
        // (The four filled the bucket, which T0 starts: the first is refused.)
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "round {round}");
        let wait: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=61).contains(&wait), "at most one window (+1 s of rounding): {wait}");
        app.clock.advance(Duration::from_secs(wait));
        assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::OK, "admitted after {wait} s");
    }
}

#[tokio::test]
async fn refused_requests_spend_no_quota() {
    let app = spawn_app_with(
        "[[rate_limit.policies]]\nname = \"burst\"\nlimit = 1\nwindow = \"1s\"\n\
         [[rate_limit.policies]]\nname = \"sustained\"\nlimit = 3\nwindow = \"60s\"",
    )
    .await;
    let alice = token("alice");
    let status = |r: reqwest::Response| r.status();
    assert_eq!(status(app.get(&alice, "/v1/sessions").await), StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            status(app.get(&alice, "/v1/sessions").await),
            StatusCode::TOO_MANY_REQUESTS,
            "burst refuses"
        );
    }
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(status(app.get(&alice, "/v1/sessions").await), StatusCode::OK);
    app.clock.advance(Duration::from_secs(2));
    // Had the five refusals spent "sustained", this third admission would fail.
    assert_eq!(status(app.get(&alice, "/v1/sessions").await), StatusCode::OK);
    app.clock.advance(Duration::from_secs(2));
    let r = app.get(&alice, "/v1/sessions").await;
    let body = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    assert_eq!(body["violated_policies"], json!(["sustained"]));
}

#[tokio::test]
async fn handler_errors_still_spend_quota() {
    let app = spawn_app_with("[[rate_limit.policies]]\nname = \"p\"\nlimit = 2\nwindow = \"60s\"").await;
    let alice = token("alice");
    let missing = format!("/v1/sessions/{}", uuid::Uuid::now_v7());
    assert_eq!(app.get(&alice, &missing).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(&alice, &missing).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn policies_apply_only_to_their_routes() {
    let app = spawn_app_with(
        "[[rate_limit.policies]]\nname = \"session-create\"\nlimit = 1\nwindow = \"60s\"\nroutes = [\"POST /v1/sessions\"]",
    )
    .await;
    let alice = token("alice");
    app.clock.advance_ms(250);
    app.create_ok(&alice, "general").await;
    let r = app.create(&alice, "general").await;
    assert_eq!(header(&r, "ratelimit").unwrap(), r#""session-create";r=0;t=60"#);
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    let r = app.get(&alice, "/v1/sessions").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "ratelimit-policy").is_none(), "no policy applies to this route");
}

#[tokio::test]
async fn a_head_meets_the_policies_of_its_get() {
    let app = spawn_app_with(
        "[[rate_limit.policies]]\nname = \"list\"\nlimit = 2\nwindow = \"60s\"\nroutes = [\"GET /v1/sessions\"]",
    )
    .await;
    let alice = token("alice");
    app.clock.advance_ms(250);
    let head = || app.client.head(app.url("/v1/sessions")).bearer_auth(&alice).send();
    let r = head().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit").unwrap(), r#""list";r=1;t=60"#);
    assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::OK);
    let r = head().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "a HEAD is counted with its GET");
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
}

#[tokio::test]
async fn the_session_cap_and_the_rate_limit_answer_with_different_codes() {
    let app = spawn_app_with(
        "[sessions]\nmax_per_user = 1\non_limit = \"reject\"\n\
         [[rate_limit.policies]]\nname = \"p\"\nlimit = 2\nwindow = \"60s\"",
    )
    .await;
    let alice = token("alice");
    app.create_ok(&alice, "general").await;
    assert_problem(
        app.create(&alice, "general").await,
        StatusCode::TOO_MANY_REQUESTS,
        "MAX_SESSIONS_EXCEEDED",
    )
    .await;
    assert_problem(app.create(&alice, "general").await, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
}

#[tokio::test]
async fn shadow_mode_never_refuses_but_counts() {
    for config in [
        "[rate_limit]\nshadow = true\n[[rate_limit.policies]]\nname = \"p\"\nlimit = 2\nwindow = \"60s\"",
        "[[rate_limit.policies]]\nname = \"p\"\nlimit = 2\nwindow = \"60s\"\nshadow = true",
    ] {
        let app = spawn_app_with(config).await;
        let alice = token("alice");
        for _ in 0..5 {
            assert_eq!(app.get(&alice, "/v1/sessions").await.status(), StatusCode::OK, "{config}");
        }
        assert_eq!(
            app.metric(r#"sessiongate_ratelimit_decisions_total{policy="p",decision="shadow_limited"}"#)
                .await,
            Some(3.0)
        );
        assert_eq!(
            app.metric(r#"sessiongate_ratelimit_decisions_total{policy="p",decision="limited"}"#).await,
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn overrides_raise_limits_per_role_and_per_api_key() {
    let (key, hash) = sessiongate::auth::api_keys::generate();
    let app = spawn_app_with(&format!(
        "[[auth.api_keys]]\nid = \"billing\"\nsha256 = \"{hash}\"\n\
         [[rate_limit.policies]]\nname = \"p\"\nlimit = 1\nwindow = \"60s\"\n\
         overrides = [{{ role = \"premium\", limit = 3 }}, {{ api_key = \"billing\", limit = 5 }}]"
    ))
    .await;
    let count_ok = |tok: String| {
        let app = &app;
        async move {
            let mut n = 0;
            for _ in 0..8 {
                if app.get(&tok, "/v1/sessions").await.status() == StatusCode::OK {
                    n += 1;
                }
            }
            n
        }
    };
    assert_eq!(count_ok(token("plain")).await, 1);
    assert_eq!(count_ok(token_with("vip", &["premium"], Duration::from_secs(600))).await, 3);
    let mut n = 0;
    for _ in 0..8 {
        if app.client.get(app.url("/v1/sessions")).header("x-api-key", &key).send().await.unwrap().status()
            == StatusCode::OK
        {
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

#[tokio::test]
async fn a_concurrency_policy_caps_in_flight_queries_and_frees_slots() {
    let app = spawn_app_with(
        "[agent]\necho_latency = \"1s\"\n\
         [[rate_limit.policies]]\nname = \"queries-in-flight\"\nkind = \"concurrency\"\nlimit = 2\n\
         routes = [\"POST /v1/sessions/{id}/queries\"]",
    )
    .await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    // Two in flight (seen by the server), then a third.
    let in_flight = r#"http_server_active_requests{http_request_method="POST"}"#;
    let first_two: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(app.client.post(app.url(&q)).bearer_auth(&alice).json(&json!({"input": "x"})).send())
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || async { app.metric(in_flight).await == Some(2.0) }).await);
    let refused = &app.post(&alice, &q, json!({"input": "x"})).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    for r in first_two {
        assert_eq!(r.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(header(refused, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        header(refused, "ratelimit-policy").unwrap(),
        r#""queries-in-flight";q=2;qu="concurrent-requests""#
    );
    // Slots came back when the responses went out.
    assert_eq!(app.post(&alice, &q, json!({"input": "again"})).await.status(), StatusCode::OK);

    // A client that gives up mid-request frees its slot too.
    for _ in 0..2 {
        app.abandon(app.client.post(app.url(&q)).bearer_auth(&alice).json(&json!({"input": "x"})), "POST")
            .await;
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.post(&alice, &q, json!({"input": "after"})).await.status() == StatusCode::OK
        })
        .await,
        "abandoned requests released their slots"
    );
}

#[tokio::test]
async fn a_per_ip_flood_is_cut_off_before_any_token_is_verified() {
    let app = spawn_app_with("[rate_limit.per_ip]\nper_second = 1\nburst = 5").await;
    let mut statuses = Vec::new();
    // The per-IP bucket runs on the real clock: what it may admit is the
    // burst plus a token for each second the flood took (on a loaded machine
    // it may take a few).
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let r =
            app.client.get(app.url("/v1/sessions")).bearer_auth("garbage.token.here").send().await.unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
            assert!(wait >= 1);
            let body = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
            assert_eq!(body["violated_policies"], json!(["per_ip"]));
        }
    }
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    let may_admit = 5 + started.elapsed().as_secs() as usize + 1;
    assert!(
        refused > 0 && refused >= 20usize.saturating_sub(may_admit),
        "the flood was cut off: {statuses:?}"
    );
    let verified = app.metric(r#"sessiongate_auth_failures_total{reason="malformed"}"#).await.unwrap();
    assert_eq!(verified as usize, 20 - refused, "only admitted requests reached the verifier");
    // Probes and metrics are never limited.
    for _ in 0..10 {
        assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    }
    assert!(
        app.metric(r#"sessiongate_ratelimit_decisions_total{policy="per_ip",decision="limited"}"#)
            .await
            .unwrap()
            >= refused as f64
    );
}

#[tokio::test]
async fn a_policy_naming_an_unknown_route_is_a_startup_error() {
    use sessiongate::startup::{Application, BuildOptions};
    let config = test_config(
        "[[rate_limit.policies]]\nname = \"p\"\nlimit = 1\nwindow = \"1s\"\nroutes = [\"GET /v1/nothing\"]",
    );
    let err = Application::build(config, BuildOptions::default()).await.err().expect("refused").to_string();
    assert!(err.contains("rate_limit.policies[0].routes"), "{err}");
}

#[tokio::test]
async fn the_default_configuration_limits_session_creation() {
    // The shipped defaults (no [rate_limit] section): 30 creates a minute per principal.
    let config = sessiongate::config::Config::from_toml(&format!(
        "[auth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nhs256_secret = \"{SECRET}\"\n[server]\nlisten = \"127.0.0.1:0\""
    ))
    .unwrap();
    let names: Vec<&str> = config.rate_limit.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["default", "session-create", "queries-in-flight"]);
    let app = spawn_config(config).await;
    let alice = token("alice");
    let mut created = 0;
    for _ in 0..31 {
        let r = app.create(&alice, "general").await;
        if r.status() == StatusCode::CREATED {
            created += 1;
        } else {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "RATE_LIMITED");
        }
    }
    assert_eq!(created, 30);
}

#[tokio::test]
async fn back_to_back_requests_find_their_slot_free() {
    let app = spawn_app_with(
        "[[rate_limit.policies]]\nname = \"one-at-a-time\"\nkind = \"concurrency\"\nlimit = 1\n\
         routes = [\"POST /v1/sessions/{id}/queries\"]",
    )
    .await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let q = format!("/v1/sessions/{}/queries", s["id"].as_str().unwrap());
    // Each request is sent the instant the previous response arrives.
    for n in 0..20 {
        assert_eq!(app.post(&alice, &q, json!({"input": "x"})).await.status(), StatusCode::OK, "request {n}");
    }
}
