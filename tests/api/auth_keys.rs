//! Production authentication: asymmetric keys from PEM files and from a JWKS
//! served by a real HTTP server in the test (rotating keys, going down), RFC
//! 8725 negatives, interop vectors made by PyJWT, and API keys.

use crate::helpers::*;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::IntoResponse;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A private key made by openssl, with its public PEM written to `dir`.
struct TestKey {
    encoding: EncodingKey,
    public_pem: PathBuf,
    alg: Algorithm,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn gen_key(dir: &Path, name: &str, alg: Algorithm) -> TestKey {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pem"));
    let p = private.to_str().unwrap();
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => {
            openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", p])
        }
        Algorithm::ES256 => {
            openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p])
        }
        Algorithm::EdDSA => openssl(&["genpkey", "-algorithm", "ED25519", "-out", p]),
        other => panic!("no test key for {other:?}"),
    }
    openssl(&["pkey", "-in", p, "-pubout", "-out", public.to_str().unwrap()]);
    let pem = std::fs::read(&private).unwrap();
    let encoding = match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    TestKey { encoding, public_pem: public, alg }
}

fn claims(sub: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "nbf": now - 5})
}

fn sign(key: &TestKey, alg: Algorithm, kid: Option<&str>, body: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, body, &key.encoding).unwrap()
}

fn jwk(key: &TestKey, kid: &str, pin: bool) -> Jwk {
    let mut j = Jwk::from_encoding_key(&key.encoding, key.alg).unwrap();
    j.common.key_id = Some(kid.to_string());
    if !pin {
        j.common.key_algorithm = None;
    }
    j
}

/// A JWKS endpoint on 127.0.0.1:0 that counts its fetches and can rotate
/// keys or go down.
#[derive(Clone, Default)]
struct JwksServer {
    keys: Arc<Mutex<Vec<Jwk>>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    max_age: Arc<Mutex<Option<u64>>>,
}

impl JwksServer {
    async fn start(&self) -> String {
        async fn serve(State(s): State<JwksServer>) -> axum::response::Response {
            s.hits.fetch_add(1, Ordering::SeqCst);
            if s.down.load(Ordering::SeqCst) {
                return AxStatus::SERVICE_UNAVAILABLE.into_response();
            }
            let mut headers = HeaderMap::new();
            if let Some(age) = *s.max_age.lock().unwrap() {
                headers.insert("cache-control", format!("max-age={age}").parse().unwrap());
            }
            (headers, Json(JwkSet { keys: s.keys.lock().unwrap().clone() })).into_response()
        }
        let app = axum::Router::new().route("/jwks.json", axum::routing::get(serve)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks.json")
    }

    fn set(&self, keys: Vec<Jwk>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn status_and_reason(app: &TestApp, token: &str) -> (StatusCode, Option<String>) {
    let r = app.get(token, "/v1/sessions").await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (status, body["reason"].as_str().map(str::to_string))
}

fn toml_list(paths: &[&Path]) -> String {
    let items: Vec<String> = paths.iter().map(|p| format!("{:?}", p.to_str().unwrap())).collect();
    format!("[{}]", items.join(", "))
}

#[tokio::test]
async fn every_algorithm_verifies_from_pem_files_with_and_without_kid() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = gen_key(dir.path(), "rsa-1", Algorithm::RS256);
    let ec = gen_key(dir.path(), "ec-1", Algorithm::ES256);
    let ed = gen_key(dir.path(), "ed-1", Algorithm::EdDSA);
    let files = toml_list(&[&rsa.public_pem, &ec.public_pem, &ed.public_pem]);
    let app = spawn_app_with(&format!("[auth]\npublic_key_files = {files}")).await;
    for (key, alg, kid) in [
        (&rsa, Algorithm::RS256, "rsa-1"),
        (&rsa, Algorithm::PS256, "rsa-1"),
        (&ec, Algorithm::ES256, "ec-1"),
        (&ed, Algorithm::EdDSA, "ed-1"),
    ] {
        for kid in [Some(kid), None] {
            let t = sign(key, alg, kid, &claims("alice"));
            assert_eq!(status_and_reason(&app, &t).await, (StatusCode::OK, None), "{alg:?} kid={kid:?}");
        }
    }
    // HS256 keeps working alongside.
    assert_eq!(app.get(&token("alice"), "/v1/sessions").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_algorithm_must_fit_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = gen_key(dir.path(), "rsa-1", Algorithm::RS256);
    let ec = gen_key(dir.path(), "ec-1", Algorithm::ES256);
    let files = toml_list(&[&rsa.public_pem, &ec.public_pem]);
    let app = spawn_app_with(&format!("[auth]\npublic_key_files = {files}")).await;
    // A kid naming the RSA key, signed with the EC key as ES256.
    let t = sign(&ec, Algorithm::ES256, Some("rsa-1"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &t).await, (StatusCode::UNAUTHORIZED, Some("bad_signature".into())));
    // HS256 "signed" with the RSA public key as the secret: the classic confusion.
    let public_pem = std::fs::read(&rsa.public_pem).unwrap();
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_eq!(status_and_reason(&app, &t).await, (StatusCode::UNAUTHORIZED, Some("bad_signature".into())));
    // An algorithm outside the allowlist.
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims("alice"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(status_and_reason(&app, &t).await, (StatusCode::UNAUTHORIZED, Some("bad_signature".into())));
    // A kid nobody has, and no JWKS to ask.
    let t = sign(&rsa, Algorithm::RS256, Some("nobody"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &t).await, (StatusCode::UNAUTHORIZED, Some("unknown_kid".into())));
}

#[tokio::test]
async fn interop_vectors_from_pyjwt_verify_as_labelled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop");
    let fixtures: Value = serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    let files =
        toml_list(&[&dir.join("interop-rsa.pem"), &dir.join("interop-ec.pem"), &dir.join("interop-ed.pem")]);
    // The vectors' valid tokens expire in 2100: no bound on their lifetime.
    let app = spawn_app_with(&format!(
        "[auth]\nissuer = {:?}\naudience = {:?}\npublic_key_files = {files}\nmax_token_lifetime = \"0s\"",
        fixtures["issuer"].as_str().unwrap(),
        fixtures["audience"].as_str().unwrap()
    ))
    .await;
    let vectors = fixtures["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 26);
    for v in vectors {
        let (status, reason) = status_and_reason(&app, v["token"].as_str().unwrap()).await;
        match v["expect"].as_str().unwrap() {
            "ok" => assert_eq!((status, reason), (StatusCode::OK, None), "{}", v["name"]),
            want => assert_eq!(
                (status, reason.as_deref()),
                (StatusCode::UNAUTHORIZED, Some(want)),
                "{}",
                v["name"]
            ),
        }
    }
}

/// An app with one JWKS-served key `a`; cooldown short enough to test.
async fn jwks_app(server: &JwksServer, key: &TestKey, cooldown: &str) -> TestApp {
    server.set(vec![jwk(key, "a", false)]);
    let url = server.start().await;
    spawn_app_with(&format!(
        "[auth]\njwks_url = {url:?}\njwks_cooldown = {cooldown:?}\njwks_refresh = \"1h\""
    ))
    .await
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::ES256);
    let b = gen_key(dir.path(), "b", Algorithm::EdDSA);
    let server = JwksServer::default();
    let app = jwks_app(&server, &a, "100ms").await;
    assert_eq!(server.hits(), 1, "fetched at start-up");
    let ta = sign(&a, Algorithm::ES256, Some("a"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &ta).await.0, StatusCode::OK);
    assert_eq!(server.hits(), 1, "cached");

    server.set(vec![jwk(&a, "a", false), jwk(&b, "b", false)]);
    tokio::time::sleep(Duration::from_millis(150)).await; // past the cooldown
    let tb = sign(&b, Algorithm::EdDSA, Some("b"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &tb).await.0, StatusCode::OK);
    assert_eq!(server.hits(), 2, "exactly one refetch");
    assert_eq!(status_and_reason(&app, &ta).await.0, StatusCode::OK, "the old key still works");
    assert_eq!(server.hits(), 2);
    assert_eq!(app.metric(r#"sessiongate_jwks_refreshes_total{outcome="ok"}"#).await, Some(2.0));
}

#[tokio::test]
async fn a_hundred_concurrent_unknown_kids_cause_exactly_one_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::ES256);
    let c = gen_key(dir.path(), "c", Algorithm::ES256);
    let server = JwksServer::default();
    let app = jwks_app(&server, &a, "100ms").await;
    server.set(vec![jwk(&a, "a", false), jwk(&c, "c", false)]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let tc = sign(&c, Algorithm::ES256, Some("c"), &claims("alice"));
    let results = futures::future::join_all((0..100).map(|_| app.get(&tc, "/v1/sessions"))).await;
    assert!(results.iter().all(|r| r.status() == StatusCode::OK), "all waited for the one fetch");
    assert_eq!(server.hits(), 2, "start-up + one refetch for all hundred");
}

#[tokio::test]
async fn an_unknown_kid_inside_the_cooldown_is_refused_without_a_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::ES256);
    let server = JwksServer::default();
    let app = jwks_app(&server, &a, "1h").await;
    let t = sign(&a, Algorithm::ES256, Some("zzz"), &claims("alice"));
    for _ in 0..5 {
        assert_eq!(status_and_reason(&app, &t).await, (StatusCode::UNAUTHORIZED, Some("unknown_kid".into())));
    }
    assert_eq!(server.hits(), 1, "only the start-up fetch");
    assert_eq!(app.metric(r#"sessiongate_auth_failures_total{reason="unknown_kid"}"#).await, Some(5.0));
}

#[tokio::test]
async fn the_jwks_going_down_keeps_the_last_good_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::RS256);
    let server = JwksServer::default();
    let app = jwks_app(&server, &a, "100ms").await;
    server.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // An unknown kid makes it try, and fail.
    let stranger = sign(&a, Algorithm::RS256, Some("new"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &stranger).await.1.as_deref(), Some("unknown_kid"));
    assert_eq!(server.hits(), 2);
    assert_eq!(app.metric(r#"sessiongate_jwks_refreshes_total{outcome="error"}"#).await, Some(1.0));
    let known = sign(&a, Algorithm::RS256, Some("a"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &known).await.0, StatusCode::OK, "old keys still work");
}

#[tokio::test]
async fn a_pinned_jwk_alg_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::RS256);
    let server = JwksServer::default();
    server.set(vec![jwk(&a, "pinned", true)]); // alg RS256
    let url = server.start().await;
    let app = spawn_app_with(&format!("[auth]\njwks_url = {url:?}")).await;
    let rs = sign(&a, Algorithm::RS256, Some("pinned"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &rs).await.0, StatusCode::OK);
    let ps = sign(&a, Algorithm::PS256, Some("pinned"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &ps).await, (StatusCode::UNAUTHORIZED, Some("bad_signature".into())));
}

#[tokio::test]
async fn a_jku_in_a_token_is_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::RS256);
    let attacker = gen_key(dir.path(), "evil", Algorithm::RS256);
    let trusted = JwksServer::default();
    let app = jwks_app(&trusted, &a, "1h").await;
    let evil = JwksServer::default();
    evil.set(vec![jwk(&attacker, "evil", false)]);
    let evil_url = evil.start().await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("evil".into());
    header.jku = Some(evil_url);
    let t = jsonwebtoken::encode(&header, &claims("alice"), &attacker.encoding).unwrap();
    assert_eq!(status_and_reason(&app, &t).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(evil.hits(), 0, "the token's jku was not followed");
}

#[tokio::test]
async fn max_age_from_the_jwks_shortens_the_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::ES256);
    let server = JwksServer::default();
    *server.max_age.lock().unwrap() = Some(1);
    let _app = jwks_app(&server, &a, "100ms").await;
    assert!(
        eventually(Duration::from_secs(5), || async { server.hits() >= 2 }).await,
        "refreshed after max-age=1"
    );
}

#[tokio::test]
async fn an_unreachable_jwks_at_start_up_fails_production_and_warns_otherwise() {
    use sessiongate::startup::{Application, BuildOptions};
    let config = test_config("[auth]\njwks_url = \"http://127.0.0.1:9/jwks.json\"");
    let production = Application::build(config.clone(), BuildOptions { production: true, clock: None }).await;
    let err = production.err().expect("production refuses").to_string();
    assert!(err.contains("auth.jwks_url"), "{err}");
    assert!(Application::build(config, BuildOptions { production: false, clock: None }).await.is_ok());
}

#[tokio::test]
async fn api_keys_authenticate_services_by_hash() {
    let (key, hash) = sessiongate::auth::api_keys::generate();
    let (admin_key, admin_hash) = sessiongate::auth::api_keys::generate();
    let app = spawn_app_with(&format!(
        "[[auth.api_keys]]\nid = \"billing\"\nsha256 = \"{hash}\"\nroles = [\"service\"]\n\
         [[auth.api_keys]]\nid = \"ops-bot\"\nsha256 = \"{admin_hash}\"\nroles = [\"admin\"]"
    ))
    .await;
    let with_key = |k: &str, path: &str| app.client.get(app.url(path)).header("x-api-key", k).send();
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .header("x-api-key", &key)
        .json(&json!({"tool_set": "general"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["user_id"], "apikey:billing");
    assert_eq!(with_key(&key, "/v1/admin/sessions?user=x").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        with_key(&admin_key, "/v1/admin/sessions?user=apikey:billing").await.unwrap().status(),
        StatusCode::OK
    );
    let body = assert_problem(
        with_key("sg_wrong", "/v1/sessions").await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    )
    .await;
    assert_eq!(body["reason"], "bad_api_key");
    // A JWT cannot claim to be a service.
    let forged = token("apikey:billing");
    assert_eq!(status_and_reason(&app, &forged).await, (StatusCode::UNAUTHORIZED, Some("malformed".into())));
    assert_eq!(app.metric(r#"sessiongate_auth_failures_total{reason="bad_api_key"}"#).await, Some(1.0));
}

#[tokio::test]
async fn an_empty_key_set_keeps_the_last_good_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a", Algorithm::ES256);
    let server = JwksServer::default();
    let app = jwks_app(&server, &a, "100ms").await;
    server.set(vec![]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stranger = sign(&a, Algorithm::ES256, Some("new"), &claims("alice"));
    assert_eq!(status_and_reason(&app, &stranger).await.1.as_deref(), Some("unknown_kid"));
    assert_eq!(server.hits(), 2, "it did fetch");
    assert_eq!(app.metric(r#"sessiongate_jwks_refreshes_total{outcome="error"}"#).await, Some(1.0));
    let known = sign(&a, Algorithm::ES256, Some("a"), &claims("alice"));
    assert_eq!(
        status_and_reason(&app, &known).await.0,
        StatusCode::OK,
        "an empty set did not lock everyone out"
    );
}

/// Key and token hygiene (RFC 7515 §4.1.11, 7518 §3.3, 8725 §3.11, 9068):
/// vectors made by PyJWT (`tests/fixtures/interop/make_hygiene_fixtures.py`),
/// verified through a JWKS that holds a 1024-bit RSA key beside a 2048-bit one.
#[tokio::test]
async fn hygiene_vectors_from_pyjwt_verify_as_labelled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop");
    let fixtures: Value = serde_json::from_slice(&std::fs::read(dir.join("hygiene.json")).unwrap()).unwrap();
    let set: JwkSet = serde_json::from_value(fixtures["jwks"].clone()).unwrap();
    let server = JwksServer::default();
    server.set(set.keys);
    let url = server.start().await;
    let app = spawn_app_with(&format!(
        "[auth]\nissuer = {:?}\naudience = {:?}\njwks_url = {url:?}\njwks_cooldown = \"100ms\"\njwks_refresh = \"1h\"\n\
         max_token_lifetime = \"876000h\"",
        fixtures["issuer"].as_str().unwrap(),
        fixtures["audience"].as_str().unwrap()
    ))
    .await;
    let new_reasons = ["unsupported_crit", "bad_type", "lifetime_too_long", "issued_in_future"];
    for reason in new_reasons {
        let series = format!("sessiongate_auth_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(app.metric(&series).await, Some(0.0), "{reason} starts at 0");
    }
    let skipped = r#"sessiongate_jwks_keys_skipped_total{reason="weak_key"}"#;
    assert_eq!(app.metric(skipped).await, Some(1.0), "the 1024-bit key is left out, and counted");
    let mut descriptions = std::collections::HashSet::new();
    for v in fixtures["vectors"].as_array().unwrap() {
        let token = v["token"].as_str().unwrap();
        let r = app.get(token, "/v1/sessions").await;
        let status = r.status();
        let challenge = r.headers().get("www-authenticate").map(|h| h.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        match v["expect"].as_str().unwrap() {
            "ok" => assert_eq!(status, StatusCode::OK, "{}: {body}", v["name"]),
            want => {
                assert_eq!(
                    (status, body["reason"].as_str()),
                    (StatusCode::UNAUTHORIZED, Some(want)),
                    "{}",
                    v["name"]
                );
                let challenge = challenge.expect("a 401 carries WWW-Authenticate");
                assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
                if new_reasons.contains(&want) {
                    descriptions.insert(challenge);
                }
            }
        }
    }
    assert_eq!(
        descriptions.len(),
        new_reasons.len(),
        "each reason has its own error_description: {descriptions:?}"
    );
    // A refetch (a token naming the skipped key, past the cooldown) finds
    // the weak key again: it is reported once while it stays in the set.
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let weak = fixtures["vectors"].as_array().unwrap().iter().find(|v| v["expect"] == "unknown_kid").unwrap();
    assert_eq!(status_and_reason(&app, weak["token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);
    assert!(server.hits() > hits, "fetched again");
    assert_eq!(app.metric(skipped).await, Some(1.0), "the same weak key, counted once");
    for reason in new_reasons {
        let series = format!("sessiongate_auth_failures_total{{reason=\"{reason}\"}}");
        assert!(app.metric(&series).await.unwrap() >= 1.0, "{reason} counted");
    }
}

/// What `Application::build` says of this `[auth]` table (with and without
/// `--production`: key hygiene does not depend on it).
async fn build_error(auth: &str) -> Option<String> {
    let mut errors = Vec::new();
    for production in [false, true] {
        let config = sessiongate::config::Config::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\n{auth}"
        ))
        .expect("the file itself is valid");
        let options = sessiongate::startup::BuildOptions { production, clock: None };
        let built = sessiongate::startup::Application::build(config, options).await;
        errors.push(built.err().map(|e| format!("{e:#}")));
    }
    assert_eq!(errors[0], errors[1], "the same with and without --production");
    errors.remove(0)
}

#[tokio::test]
async fn hs256_secrets_shorter_than_32_bytes_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    // A secret file holding only a newline: before, the server started with
    // an empty HMAC key, and HMAC("") signed an admin's token.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e =
        build_error(&format!("hs256_secret_file = {:?}", empty.to_str().unwrap())).await.expect("refused");
    assert!(e.contains("auth.hs256_secret_file: the secret is 0 bytes; HS256 needs at least 32"), "{e}");
    let e = build_error("hs256_secret = \"0123456789abcdef\"").await.expect("refused");
    assert!(e.contains("auth.hs256_secret: the secret is 16 bytes"), "{e}");
    assert_eq!(build_error("hs256_secret = \"0123456789abcdef0123456789abcdef\"").await, None);
    // check-config says the same.
    let file = dir.path().join("short.toml");
    std::fs::write(&file, "[auth]\nhs256_secret = \"0123456789abcdef\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.hs256_secret: the secret is 16 bytes"));
}

#[tokio::test]
async fn an_rsa_pem_key_under_2048_bits_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("small.key");
    let public = dir.path().join("small.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    let e =
        build_error(&format!("public_key_files = [{:?}]", public.to_str().unwrap())).await.expect("refused");
    assert!(e.contains("auth.public_key_files[0]") && e.contains("an RSA key of 1024 bits"), "{e}");
    gen_key(dir.path(), "strong", Algorithm::RS256);
    assert_eq!(
        build_error(&format!("public_key_files = [{:?}]", dir.path().join("strong.pem").to_str().unwrap()))
            .await,
        None
    );
    // An IdP's signing certificate is a key file too: its key's size counts.
    for (bits, refused) in [(1024, true), (2048, false)] {
        let cert = dir.path().join(format!("cert{bits}.pem"));
        let key = dir.path().join(format!("cert{bits}.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=idp.test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        let e = build_error(&format!("public_key_files = [{:?}]", cert.to_str().unwrap())).await;
        assert_eq!(e.is_some(), refused, "a {bits}-bit certificate: {e:?}");
        if refused {
            assert!(e.unwrap().contains(&format!("an RSA key of {bits} bits")));
        }
    }
}

#[tokio::test]
async fn tokens_living_longer_than_max_token_lifetime_are_refused_unless_it_is_off() {
    let long = token_with("alice", &[], Duration::from_secs(48 * 3600));
    let short = token_with("alice", &[], Duration::from_secs(23 * 3600));
    let app = spawn_app().await;
    assert_eq!(
        status_and_reason(&app, &long).await,
        (StatusCode::UNAUTHORIZED, Some("lifetime_too_long".into()))
    );
    assert_eq!(status_and_reason(&app, &short).await.0, StatusCode::OK);
    let off = spawn_app_with("[auth]\nmax_token_lifetime = \"0s\"").await;
    assert_eq!(status_and_reason(&off, &long).await.0, StatusCode::OK);
}

/// A JWKS body with no Content-Length that never ends is cut off at the
/// bound while it streams in (a whole-body read would never return).
#[tokio::test]
async fn an_endless_jwks_body_is_cut_off_while_it_streams() {
    async fn endless() -> axum::body::Body {
        let chunk = axum::body::Bytes::from(vec![b' '; 8192]);
        axum::body::Body::from_stream(futures::stream::repeat_with(move || {
            Ok::<_, std::io::Error>(chunk.clone())
        }))
    }
    let app = axum::Router::new().route("/jwks.json", axum::routing::get(endless));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = sessiongate::config::Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\njwks_url = {url:?}\njwks_refresh = \"1h\"\njwks_cooldown = \"1h\""
    ))
    .unwrap();
    let options = sessiongate::startup::BuildOptions { production: true, clock: None };
    let built = tokio::time::timeout(
        Duration::from_secs(20),
        sessiongate::startup::Application::build(config, options),
    )
    .await
    .expect("the fetch gives up at the bound");
    let e = format!("{:#}", built.err().expect("production refuses a JWKS it cannot read"));
    assert!(e.contains("the key set is larger than"), "{e}");
}
