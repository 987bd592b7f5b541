//! CORS as a browser meets it, over real HTTP: the preflight of a traced
//! call passes and is cached, and every answer a script must read (success
//! or error: 401, 403, 404, 405, 429, 503) carries the CORS headers and
//! exposes the headers the web client reads.

use crate::helpers::*;
use crate::redis_server::RedisServer;
use reqwest::{Method, Response, StatusCode};

const ORIGIN: &str = "https://app.example.com";

fn cors_config(extra: &str) -> String {
    format!("[server]\ncors_allowed_origins = [\"{ORIGIN}\"]\n{extra}")
}

/// The answer is readable by a script on `ORIGIN`, which may read every
/// header the client needs.
fn assert_readable(r: &Response) {
    let h = r.headers();
    assert_eq!(h.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(ORIGIN), "{h:?}");
    let exposed = h["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    for name in [
        "location",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
        "x-request-id",
        "idempotent-replayed",
        "www-authenticate",
    ] {
        assert!(exposed.split(',').any(|e| e.trim() == name), "{name} not exposed: {exposed}");
    }
    assert!(h.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_preflight_for_a_traced_call_passes_and_is_cached() {
    let app = spawn_app_with(&cors_config("")).await;
    let r = app
        .client
        .request(Method::OPTIONS, app.url("/v1/sessions"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key,traceparent,tracestate,x-request-id",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for name in
        ["authorization", "content-type", "idempotency-key", "x-request-id", "traceparent", "tracestate"]
    {
        assert!(allowed.split(',').any(|a| a.trim() == name), "{name} not allowed: {allowed}");
    }
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert_eq!(h["access-control-max-age"], "600");
}

#[tokio::test]
async fn every_error_answer_carries_the_cors_headers() {
    let app = spawn_app_with(&cors_config(
        "[[rate_limit.policies]]\nname = \"tight\"\nlimit = 1\nwindow = \"60s\"\nroutes = [\"GET /v1/tool-sets\"]",
    ))
    .await;
    let alice = token("alice");
    let send = |method: Method, path: &str, bearer: Option<&str>| {
        let mut req = app.client.request(method, app.url(path)).header("origin", ORIGIN);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let expect = [
        (send(Method::GET, "/v1/sessions", None).await.unwrap(), StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        (
            send(Method::GET, "/v1/admin/config", Some(&alice)).await.unwrap(),
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            send(Method::GET, "/v1/sessions/0190f7d2-0000-7000-8000-000000000000", Some(&alice))
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (send(Method::GET, "/v1/nowhere", Some(&alice)).await.unwrap(), StatusCode::NOT_FOUND, "NOT_FOUND"),
        (
            send(Method::PUT, "/v1/sessions", Some(&alice)).await.unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (r, status, code) in expect {
        assert_readable(&r);
        assert_problem(r, status, code).await;
    }
    let first = send(Method::GET, "/v1/tool-sets", Some(&alice)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_readable(&first);
    assert!(first.headers().contains_key("ratelimit"));
    let refused = send(Method::GET, "/v1/tool-sets", Some(&alice)).await.unwrap();
    assert_readable(&refused);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.headers().contains_key("ratelimit-policy"));
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
}

#[tokio::test]
async fn a_503_from_a_lost_store_carries_the_cors_headers() {
    let mut redis = RedisServer::start();
    let app = spawn_app_with(&cors_config(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"cors\"\ncommand_timeout = \"250ms\"",
        redis.url()
    )))
    .await;
    app.expect_failures();
    redis.kill();
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(token("alice"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_readable(&r);
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE").await;
}
