//! The OWASP API Security Top 10 (2023), item by item where it applies.
//! (API1 object-level authorization is `sessions::another_users_session_is_a_404_on_every_verb`;
//! API2 broken authentication is `auth` and `auth_keys`; API5 function-level
//! authorization is `auth::a_principal_without_the_admin_role_gets_403_on_admin_routes`;
//! API7 SSRF: the only outbound URLs are configured, never taken from requests,
//! and redirects are not followed (`agent_http`); API10: the agent's answers
//! are bounded and never passed through raw, also `agent_http`.)

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

/// API3, broken object property level authorization (mass assignment): a
/// client cannot set what the server owns — not on create, not on PATCH.
#[tokio::test]
async fn api3_server_owned_properties_cannot_be_assigned() {
    let app = spawn_app().await;
    let alice = token("alice");
    for body in [
        json!({"tool_set": "general", "user_id": "mallory"}),
        json!({"tool_set": "general", "id": "01a20000-0000-7000-8000-000000000000"}),
        json!({"tool_set": "general", "expires_at": "2099-01-01T00:00:00Z"}),
    ] {
        let r = app.post(&alice, "/v1/sessions", body.clone()).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED").await;
    }
    let s = app.create_ok(&alice, "general").await;
    let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    for body in [
        json!({"tool_set": "coding", "user_id": "mallory"}),
        json!({"tool_set": "coding", "conversation_turns": 0}),
        json!({"tool_set": "coding", "expires_at": "2099-01-01T00:00:00Z"}),
    ] {
        let r = app.patch(&alice, &path, body).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED").await;
    }
    let after: serde_json::Value = app.get(&alice, &path).await.json().await.unwrap();
    assert_eq!(after, s, "nothing changed");
}

/// API4, unrestricted resource consumption: the idempotency keys a user can
/// hold are bounded (each is a stored record for `idempotency_ttl`), with a
/// 429 that says how long to wait; replays and key-less creates go on.
#[tokio::test]
async fn api4_the_idempotency_keys_a_user_holds_are_bounded() {
    let app =
        spawn_app_with("[sessions]\nmax_idempotency_keys_per_user = 3\nidempotency_ttl = \"10m\"").await;
    let alice = token("alice");
    let create = |key: Option<String>| {
        let mut c = app.client.post(app.url("/v1/sessions")).bearer_auth(&alice);
        if let Some(k) = key {
            c = c.header("Idempotency-Key", k);
        }
        async move { c.json(&json!({"tool_set": "general"})).send().await.unwrap() }
    };
    for n in 0..3 {
        assert_eq!(create(Some(format!("k-{n}"))).await.status(), StatusCode::CREATED);
        app.clock.advance(Duration::from_secs(60));
    }
    let r = create(Some("k-3".into())).await;
    assert_eq!(r.headers()["retry-after"], "420", "the oldest key expires 10m after it was sent, 3m ago");
    let p = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "IDEMPOTENCY_KEYS_EXCEEDED").await;
    assert_eq!(p["max_idempotency_keys"], 3);
    // Counted as what it is, not as a rate-limit or session-cap refusal.
    assert_eq!(app.metric("sessiongate_idempotency_keys_exhausted_total").await, Some(1.0));
    assert_eq!(app.metric(r#"sessiongate_session_limit_hits_total{action="rejected"}"#).await, Some(0.0));
    let replay = create(Some("k-0".into())).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(create(None).await.status(), StatusCode::CREATED);
    app.clock.advance(Duration::from_secs(420));
    assert_eq!(create(Some("k-3".into())).await.status(), StatusCode::CREATED, "k-0 has expired");
}

/// API4, unrestricted resource consumption: bodies, headers and slow clients
/// are bounded, and refused without a 5xx.
#[tokio::test]
async fn api4_bodies_headers_and_slow_clients_are_bounded() {
    let app = spawn_app_with("[server]\nmax_body_bytes = 1024\nrequest_timeout = \"500ms\"").await;
    let alice = token("alice");
    let big = json!({"tool_set": "general", "pad": "x".repeat(4096)});
    let r = app.post(&alice, "/v1/sessions", big).await;
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;

    // A header block far over any sane size: refused by the HTTP layer.
    let r = app.client.get(app.url("/healthz")).header("x-huge", "y".repeat(512 * 1024)).send().await;
    match r {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.to_string().contains("connection"), "{e}"),
    }

    // A client that announces a body and never sends it is cut off by the
    // request timeout, with a 408 problem.
    let addr = app.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            token("alice")
        );
        s.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        (String::from_utf8_lossy(&buf[..n]).to_string(), started.elapsed())
    })
    .await
    .unwrap();
    assert!(answer.0.starts_with("HTTP/1.1 408"), "{:?}", answer.0);
    assert!(answer.1 < Duration::from_secs(3), "cut off after {:?}", answer.1);
}

/// API8, security misconfiguration: every answer carries the REST security
/// headers; CORS is closed unless origins are configured, and then only to them.
#[tokio::test]
async fn api8_security_headers_and_a_closed_cors_policy() {
    let app = spawn_app().await;
    let alice = token("alice");
    let ok = app.create(&alice, "general").await;
    let problem = app.client.get(app.url("/v1/sessions")).send().await.unwrap();
    for r in [&ok, &problem] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        assert!(h.get("server").is_none(), "no server banner");
    }

    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/sessions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let r = preflight(&app, "https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "no CORS unless configured");

    let app = spawn_app_with("[server]\ncors_allowed_origins = [\"https://app.example.com\"]").await;
    let r = preflight(&app, "https://app.example.com").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let methods = r.headers()["access-control-allow-methods"].to_str().unwrap().to_string();
    assert!(methods.contains("POST") && !methods.contains("PUT"), "{methods}");
    let r = preflight(&app, "https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "an unlisted origin gets nothing");
    let r = app
        .client
        .get(app.url("/v1/tool-sets"))
        .bearer_auth(&alice)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// API8 too: errors say what went wrong for the client and nothing about the
/// server's insides (no file paths, types, stack frames or store addresses).
#[tokio::test]
async fn api8_errors_reveal_no_internals() {
    let app = spawn_app().await;
    let alice = token("alice");
    let probes = [
        app.client
            .post(app.url("/v1/sessions"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body("{\"tool_set\": ")
            .send()
            .await
            .unwrap(),
        app.post(&alice, "/v1/sessions", json!({"tool_set": 42})).await,
        app.get(&alice, "/v1/sessions/not-a-uuid").await,
        app.client.get(app.url("/v1/sessions")).bearer_auth("a.b.c").send().await.unwrap(),
    ];
    for r in probes {
        let text = r.text().await.unwrap();
        for leak in ["src/", ".rs", "serde", "panicked", "backtrace", "redis://", "::"] {
            assert!(!text.contains(leak), "{leak:?} in {text}");
        }
    }
}

/// API4 too: a client that sends half a request head and then nothing
/// (slowloris) is disconnected after `server.header_read_timeout`, instead of
/// holding its connection forever; so is one that connects and sends
/// nothing, and a kept-alive connection that sends no next request. None of
/// them before the deadline.
#[tokio::test]
async fn api4_a_slow_header_client_is_disconnected() {
    let app = spawn_app_with("[server]\nheader_read_timeout = \"500ms\"").await;
    let addr = app.addr;
    // How long until the server closes a connection that sent `bytes`, and
    // what it answered; timed from before the connection was made, so a
    // deadline that began later cannot have passed sooner.
    let closed_after = |bytes: &'static [u8]| {
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(bytes).unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            (started.elapsed(), String::from_utf8_lossy(&answer).to_string())
        })
    };
    for (what, bytes) in [
        ("half a head", &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "[..]),
        ("nothing at all", &b""[..]),
        ("a request, then nothing", &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
    ] {
        let (after, answer) = closed_after(bytes).await.unwrap();
        assert!(after < Duration::from_secs(3), "{what}: still open after {after:?}");
        assert!(after >= Duration::from_millis(500), "{what}: closed after only {after:?}");
        if what.starts_with("a request") {
            assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer:?}");
            assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{what}: {answer:?}");
        } else {
            assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
        }
    }
    // A normal client is unaffected.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}
