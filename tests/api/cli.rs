//! The binary's commands: check-config, token, openapi, and the start-up rules
//! for production and dev mode.

use crate::helpers::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The binary with none of the caller's environment but `PATH` (a
/// `SESSIONGATE__*` variable set where the tests run must not reach it).
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let f = write_config(&format!("[auth]\nhs256_secret = \"{SECRET}\"\n[sessions]\nmax_per_user = 4\n"));
    let out = bin()
        .args(["check-config", "--config"])
        .arg(f.path())
        .env("SESSIONGATE__SESSIONS__IDLE_TTL", "5m")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_per_user = 4"), "{text}");
    assert!(text.contains("idle_ttl = \"5m\""), "env override applied: {text}");
    assert!(!text.contains(SECRET), "secret leaked: {text}");
    assert!(text.contains("[redacted]"));
}

#[test]
fn check_config_names_the_bad_key() {
    let f = write_config("[sessions]\nmax_per_user = 0\nidle_ttl = \"forever\"\n");
    let out = bin().args(["check-config", "--config"]).arg(f.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("sessions.idle_ttl"), "{err}");
}

#[test]
fn production_refuses_to_start_without_key_material() {
    let out = bin()
        .args(["serve", "--production"])
        .env("SESSIONGATE__SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("no key material"));
    for value in ["1", "true", "yes"] {
        let out = bin()
            .env("SESSIONGATE_PRODUCTION", value)
            .env("SESSIONGATE__SERVER__LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("no key material"), "SESSIONGATE_PRODUCTION={value}: {err}");
    }
}

#[tokio::test]
async fn token_mints_what_the_server_accepts() {
    let f = write_config(&format!(
        "[auth]\nhs256_secret = \"{SECRET}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n"
    ));
    let out = bin()
        .args(["token", "--sub", "carol", "--role", "admin", "--ttl", "10m", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let verifier = sessiongate::auth::JwtVerifier::hs256(
        &sessiongate::config::Secret::new(SECRET),
        sessiongate::auth::TokenRules {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway: Duration::ZERO,
            max_lifetime: Duration::from_secs(24 * 3600),
            admin_role: "admin".into(),
        },
    );
    let p = verifier.verify(&token).await.expect("server accepts the minted token");
    assert_eq!(&*p.id, "carol");
    assert!(p.is_admin);
}

#[test]
fn token_without_a_secret_explains_why_it_cannot() {
    let out = bin().args(["token", "--sub", "carol"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("auth.hs256_secret"));
}

#[test]
fn openapi_prints_the_document() {
    let out = bin().arg("openapi").output().unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["paths"]["/v1/sessions"].is_object());
}

/// Dev mode: starts without key material, on loopback only, and prints tokens
/// that work against itself.
#[tokio::test]
async fn dev_mode_prints_a_working_token_and_binds_loopback() {
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        bin()
            .env("SESSIONGATE__SERVER__LISTEN", "0.0.0.0:0")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (addr, token) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut addr = None;
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("sessiongate dev mode on http://") {
                addr = Some(rest.trim().to_string());
            }
            if line.starts_with("user token") {
                let token = lines.next().unwrap().unwrap().trim().to_string();
                // Keep draining stderr so the child never writes to a closed pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return (addr.expect("address printed first"), token);
            }
        }
        panic!("no token printed");
    })
    .await
    .unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "dev mode binds loopback, got {addr}");
    let r = client().get(format!("http://{addr}/v1/sessions")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    drop(child);
}

#[test]
fn hash_key_prints_a_key_and_a_config_entry_that_accepts_it() {
    let out = bin().args(["hash-key", "--id", "billing"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().find_map(|l| l.strip_prefix("# key: ")).expect("key line").to_string();
    let config = sessiongate::config::Config::from_toml(&text).expect("the printed entry is valid config");
    let keys = sessiongate::auth::ApiKeys::from_config(&config.auth.api_keys, "admin").unwrap();
    assert_eq!(&*keys.authenticate(key.as_bytes()).unwrap().id, "apikey:billing");
    assert!(!text.contains(&format!("sha256 = \"{key}\"")), "only the hash is configured");
}

/// `probe` is the container health check: exit 0 on a 2xx, 1 otherwise
/// (a draining server, a refused connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_zero_only_on_a_2xx() {
    let mut app = spawn_app_with("[server]\nshutdown_delay = \"5s\"").await;
    let base = app.url("");
    let probe = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            tokio::task::spawn_blocking(move || bin().args(["probe", "--url", &url]).output().unwrap())
                .await
                .unwrap()
        }
    };
    let ok = probe("/readyz").await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let missing = probe("/nowhere").await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    // Shutting down with a delay: readiness fails at once, yet requests are
    // still served until the delay ends.
    app.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let draining = probe("/readyz").await;
    assert_eq!(draining.status.code(), Some(1), "readiness fails while draining");
    assert!(probe("/healthz").await.status.success(), "still serving during shutdown_delay");
    let refused =
        bin().args(["probe", "--url", "http://127.0.0.1:9/healthz", "--timeout", "500ms"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
}
