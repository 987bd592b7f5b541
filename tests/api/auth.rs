//! Bearer-token authentication: every refusal is a 401 with the right
//! challenge and a counted reason; roles gate the admin routes.

use crate::helpers::*;
use reqwest::StatusCode;
use sessiongate::config::Secret;
use std::time::Duration;

async fn refused(app: &TestApp, authorization: Option<&str>) -> (String, serde_json::Value) {
    let mut req = app.client.get(app.url("/v1/sessions"));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    (challenge, assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await)
}

#[tokio::test]
async fn no_credentials_get_a_bare_challenge() {
    let app = spawn_app().await;
    let (challenge, body) = refused(&app, None).await;
    assert_eq!(challenge, r#"Bearer realm="sessiongate""#);
    assert_eq!(body["reason"], "missing");
    assert_eq!(app.metric(r#"sessiongate_auth_failures_total{reason="missing"}"#).await, Some(1.0));
}

#[tokio::test]
async fn each_failed_check_is_named_and_counted() {
    let app = spawn_app().await;
    let mint = |iss: &str, aud: &str, secret: &str, ttl: u64| {
        sessiongate::auth::mint_token(&Secret::new(secret), iss, aud, "alice", &[], Duration::from_secs(ttl))
            .unwrap()
    };
    let cases = [
        ("Bearer not-a-jwt".to_string(), "malformed"),
        ("Basic YWxpY2U6cHc=".to_string(), "malformed"),
        (
            format!("Bearer {}", mint(ISSUER, AUDIENCE, "some-other-secret-of-32-bytes!!!", 600)),
            "bad_signature",
        ),
        (format!("Bearer {}", mint("https://evil/", AUDIENCE, SECRET, 600)), "bad_issuer"),
        (format!("Bearer {}", mint(ISSUER, "someone-else", SECRET, 600)), "bad_audience"),
    ];
    for (header, reason) in cases {
        let (challenge, body) = refused(&app, Some(&header)).await;
        assert_eq!(body["reason"], reason, "{header}");
        assert!(
            challenge
                .starts_with(r#"Bearer realm="sessiongate", error="invalid_token", error_description=""#),
            "{challenge}"
        );
        assert_eq!(
            app.metric(&format!(r#"sessiongate_auth_failures_total{{reason="{reason}"}}"#)).await,
            Some(if reason == "malformed" && header.starts_with("Basic") { 2.0 } else { 1.0 }),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |exp: u64, nbf: u64| serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": exp, "nbf": nbf});
    let sign = |c: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let (_, body) = refused(&app, Some(&format!("Bearer {}", sign(claims(now - 10, now - 100))))).await;
    assert_eq!(body["reason"], "expired");
    let (_, body) = refused(&app, Some(&format!("Bearer {}", sign(claims(now + 600, now + 300))))).await;
    assert_eq!(body["reason"], "not_yet_valid");
    // Required claims: no sub, no exp.
    let no_sub = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
    let (_, body) = refused(&app, Some(&format!("Bearer {}", sign(no_sub)))).await;
    assert_eq!(body["reason"], "malformed");
    let no_exp = serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE});
    let (_, body) = refused(&app, Some(&format!("Bearer {}", sign(no_exp)))).await;
    assert_eq!(body["reason"], "malformed");
    let string_exp =
        serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": (now + 600).to_string()});
    let (_, body) = refused(&app, Some(&format!("Bearer {}", sign(string_exp)))).await;
    assert_eq!(body["reason"], "malformed");
}

#[tokio::test]
async fn an_oversize_token_is_refused_unparsed() {
    let app = spawn_app().await;
    let (_, body) = refused(&app, Some(&format!("Bearer {}", "a".repeat(9000)))).await;
    assert_eq!(body["reason"], "malformed");
}

#[tokio::test]
async fn a_token_and_an_api_key_together_are_ambiguous() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(token("alice"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    assert_eq!(body["reason"], "ambiguous");
}

#[tokio::test]
async fn roles_come_from_roles_or_scope() {
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let with_scope = serde_json::json!({"sub": "ops", "iss": ISSUER, "aud": [AUDIENCE, "other"], "exp": now + 600, "scope": "read admin"});
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &with_scope,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(app.get(&t, "/v1/admin/sessions?user=alice").await.status(), StatusCode::OK);
    assert_eq!(app.get(&admin_token("ops"), "/v1/admin/sessions?user=alice").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_principal_without_the_admin_role_gets_403_on_admin_routes() {
    let app = spawn_app().await;
    for r in [
        app.get(&token("alice"), "/v1/admin/sessions?user=bob").await,
        app.delete(&token("alice"), "/v1/admin/users/bob/sessions").await,
    ] {
        let body = assert_problem(r, StatusCode::FORBIDDEN, "FORBIDDEN").await;
        assert!(body.get("reason").is_none());
    }
    assert_eq!(app.metric(r#"sessiongate_auth_failures_total{reason="forbidden"}"#).await, Some(2.0));
    // Unauthenticated callers of admin routes are 401, not 403.
    let r = app.client.get(app.url("/v1/admin/sessions?user=bob")).send().await.unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn probes_metrics_and_openapi_need_no_credentials() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(app.client.get(app.url(path)).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_token_expiring_at_the_end_of_time_is_served_twice_without_overflow() {
    // A leeway, so `exp + leeway` would overflow if added naively; no bound
    // on the lifetime (by default such a token is refused as too long-lived).
    let app = spawn_app_with("[auth]\nleeway = \"30s\"\nmax_token_lifetime = \"0s\"").await;
    let claims = serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": u64::MAX});
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    // The second request is answered from the verified-token cache.
    for _ in 0..2 {
        assert_eq!(app.get(&t, "/v1/sessions").await.status(), StatusCode::OK);
    }
}
