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
    let app = spawn_app_with(&format!(
        "[auth]\nissuer = {:?}\naudience = {:?}\npublic_key_files = {files}",
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
