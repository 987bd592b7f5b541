//! `config_load`: `Config::from_toml` + `validate`, `check-config`'s
//! `to_redacted_toml`, and the runtime-config path (`config::runtime::apply`
//! and `patch`, an RFC 7396 merge patch over the file's values).
//!
//! Input: `TOML [\0 JSON]`. The TOML is loaded; when a JSON part follows, it
//! is a merge patch applied to that configuration (or to the defaults when
//! the TOML is not valid).
//!
//! Properties, beyond "no panic":
//! - a loaded configuration validates;
//! - `check-config` output loads again, to the same configuration, and
//!   renders identically (secrets excepted: they print as `[redacted]`,
//!   which the loader refuses for `auth.hs256_secret` on purpose, so they are
//!   set aside before the round trip); no secret of twelve characters or
//!   more appears in that output;
//! - what a valid configuration promises its users: its API keys load, and a
//!   token minted for its issuer and audience verifies, with the admin role;
//!   its rate-limit policies render valid `RateLimit-Policy` / `RateLimit`
//!   structured fields at every limit; with no overrides, the runtime path
//!   serves it unchanged;
//! - runtime: an accepted patch gives a configuration that validates (and
//!   renders valid rate-limit headers), in which only the runtime fields
//!   changed; the overrides saved for it are
//!   sparse (no `null`, no empty object), re-apply to the same configuration
//!   (as at start-up and on other replicas), and the same patch again changes
//!   nothing.

use super::sf;
use super::split_at_byte;
use futures::executor::block_on;
use serde_json::{Value, json};
use sessiongate::auth::{ApiKeys, JwtVerifier, mint_token};
use sessiongate::config::{Config, PolicyKind, Secret, runtime};
use sessiongate::ratelimit::headers::Report;
use sessiongate::ratelimit::window::Counter;
use sessiongate::ratelimit::{WindowCheck, WindowResult};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

/// Secrets shorter than this are not looked for in the rendered output
/// (a short one can occur there by chance, e.g. inside `[redacted]`).
const SECRET_SEARCH_MIN: usize = 12;

pub fn check(data: &[u8]) {
    let (toml, patch) = split_at_byte(data, 0);
    let loaded = check_toml(&String::from_utf8_lossy(toml));
    if let Some(patch) = patch {
        let base = loaded.unwrap_or_else(|| defaults().clone());
        check_runtime(&base, patch);
    }
}

fn defaults() -> &'static Config {
    static DEFAULTS: OnceLock<Config> = OnceLock::new();
    DEFAULTS.get_or_init(|| Config::from_toml("").expect("the defaults are valid"))
}

/// The checks on a TOML document; the configuration when it loads.
pub fn check_toml(text: &str) -> Option<Config> {
    let config = Config::from_toml(text).ok()?;
    if let Err(e) = config.validate() {
        panic!("from_toml returned a configuration that does not validate: {e}");
    }
    round_trip(&config);
    promises(&config);
    Some(config)
}

fn round_trip(config: &Config) {
    let full = config.to_redacted_toml();
    assert!(!full.starts_with("# cannot render"), "check-config cannot render a valid configuration: {full}");
    // Secrets print as `[redacted]` (or a URL with a redacted password) by
    // design, which does not load back as the same value: set them aside.
    fn placeholder(s: &Secret) -> Secret {
        if s.is_empty() { Secret::default() } else { Secret::new("redis://fuzz:6379") }
    }
    let mut shown = config.clone();
    shown.auth.hs256_secret = Secret::default();
    shown.store.redis_url = placeholder(&shown.store.redis_url);
    shown.store.redis_cluster_urls = shown.store.redis_cluster_urls.iter().map(placeholder).collect();
    let without = shown.to_redacted_toml();

    no_secret_shown(config, &full);

    let back = Config::from_toml(&without)
        .unwrap_or_else(|e| panic!("check-config output does not load again: {e}\n--- output:\n{without}"));
    assert_eq!(back.to_redacted_toml(), without, "check-config output is not a fixed point");
    assert_eq!(
        format!("{back:#?}"),
        format!("{shown:#?}"),
        "check-config output loads as another configuration\n--- output:\n{without}"
    );
}

/// No secret (of [`SECRET_SEARCH_MIN`] characters or more) is in `full`
/// unless it is also there with that secret taken out of the configuration.
fn no_secret_shown(config: &Config, full: &str) {
    let shown = |secret: &str, stripped: Config| {
        if secret.len() >= SECRET_SEARCH_MIN && full.contains(secret) {
            assert!(stripped.to_redacted_toml().contains(secret), "check-config shows a secret: {full}");
        }
    };
    let mut c = config.clone();
    c.auth.hs256_secret = Secret::default();
    shown(config.auth.hs256_secret.expose(), c);
    let (secret, stripped) = strip(&config.store.redis_url);
    let mut c = config.clone();
    c.store.redis_url = stripped;
    shown(&secret, c);
    for (i, url) in config.store.redis_cluster_urls.iter().enumerate() {
        let (secret, stripped) = strip(url);
        let mut c = config.clone();
        c.store.redis_cluster_urls[i] = stripped;
        shown(&secret, c);
    }
}

/// The secret part of a URL-or-secret (a URL's password, or all of it), and
/// the value without it.
fn strip(value: &Secret) -> (String, Secret) {
    match url::Url::parse(value.expose()) {
        Ok(mut u) if u.has_host() => {
            let password = u.password().unwrap_or_default().to_string();
            let _ = u.set_password(None);
            (password, Secret::new(u.to_string()))
        }
        _ => (value.expose().to_string(), Secret::default()),
    }
}

fn promises(config: &Config) {
    let a = &config.auth;
    if let Err(e) = ApiKeys::from_config(&a.api_keys, &a.admin_role) {
        panic!("the API keys of a valid configuration do not load: {e}");
    }
    let secret = if a.hs256_secret.is_empty() {
        Secret::new("fuzz-secret-0123456789abcdef")
    } else {
        a.hs256_secret.clone()
    };
    let verifier = JwtVerifier::hs256(&secret, sessiongate::auth::TokenRules::from(a));
    let roles = [a.admin_role.clone()];
    let token = mint_token(&secret, &a.issuer, &a.audience, "fuzz-user", &roles, Duration::from_secs(60))
        .expect("minting a token");
    match block_on(verifier.verify(&token)) {
        Ok(p) => assert!(p.is_admin, "the admin role is not recognised"),
        Err(e) => panic!("a token minted for this configuration does not verify: {e:?}"),
    }

    renders_rate_limit_headers(config);

    let file_doc = runtime::document(config);
    match runtime::apply(config, &json!({})) {
        Ok(effective) => {
            assert_eq!(runtime::document(&effective), file_doc);
            assert_eq!(
                format!("{effective:#?}"),
                format!("{config:#?}"),
                "no overrides, yet the config changed"
            );
        }
        Err(e) => panic!("a valid configuration with no overrides is refused by the runtime path: {e:?}"),
    }
}

/// The checks on a merge patch over the valid configuration `base`.
pub fn check_runtime(base: &Config, patch: &[u8]) {
    let Ok(patch) = serde_json::from_slice::<Value>(patch) else { return };
    if let Ok(effective) = runtime::apply(base, &patch) {
        valid_and_only_runtime_fields(base, &effective);
    }
    let Ok((overrides, effective)) = runtime::patch(base, &json!({}), &patch) else { return };
    valid_and_only_runtime_fields(base, &effective);
    assert_sparse(&overrides);
    let again = runtime::apply(base, &overrides)
        .unwrap_or_else(|e| panic!("saved overrides {overrides} no longer apply: {e:?}"));
    assert_eq!(
        format!("{again:#?}"),
        format!("{effective:#?}"),
        "saved overrides {overrides} re-apply differently"
    );
    let (twice, effective2) = runtime::patch(base, &overrides, &patch)
        .unwrap_or_else(|e| panic!("the same patch again over {overrides} is refused: {e:?}"));
    assert_eq!(twice, overrides, "the same patch again changes the overrides");
    assert_eq!(format!("{effective2:#?}"), format!("{effective:#?}"));
}

fn valid_and_only_runtime_fields(base: &Config, effective: &Config) {
    if let Err(e) = effective.validate() {
        panic!("the runtime path accepted a configuration that does not validate: {e}");
    }
    renders_rate_limit_headers(effective);
    // Compared as serialised, less the fields of the runtime document (taken
    // from the document itself, so a new runtime field needs no change here).
    let runtime_keys: Vec<String> = match &runtime::document(base)["sessions"] {
        Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("the runtime document has no sessions object: {other}"),
    };
    let file_only = |c: &Config| {
        let mut v = serde_json::to_value(c).expect("a configuration serialises");
        let sessions = v["sessions"].as_object_mut().expect("sessions");
        sessions.retain(|k, _| !runtime_keys.contains(k));
        for p in v["rate_limit"]["policies"].as_array_mut().expect("policies") {
            let p = p.as_object_mut().expect("a policy");
            p.remove("limit");
            p.remove("window");
        }
        v
    };
    assert_eq!(file_only(effective), file_only(base), "the runtime path changed a file-only field");
}

/// Every limit a policy can apply (its own, and each override's) renders a
/// `RateLimit-Policy` / `RateLimit` pair that is a valid header value and a
/// structured-field List (whose Integers have at most 15 digits).
fn renders_rate_limit_headers(config: &Config) {
    let now = 1_795_600_800_000;
    let mut report = Report::new(now);
    for (index, p) in config.rate_limit.policies.iter().enumerate() {
        for limit in std::iter::once(p.limit).chain(p.overrides.iter().map(|o| o.limit)) {
            let window_ms = p.window.map_or(0, |w| w.as_millis() as i64);
            let check =
                WindowCheck { index, name: Arc::from(p.name.as_str()), limit, window_ms, enforce: true };
            match p.kind {
                PolicyKind::Window => {
                    report.window(&check, &WindowResult { admits: true, counter: Counter::default() }, now)
                }
                PolicyKind::Concurrency => report.concurrency(&check, 0, false),
            }
        }
    }
    let headers = report.render();
    for value in [&headers.policy, &headers.limit] {
        assert!(http::HeaderValue::from_str(value).is_ok(), "not a header value: {value:?}");
        if let Err(e) = sf::parse_list(value) {
            panic!(
                "the rate-limit policies of a valid configuration render an invalid structured field ({e}): {value}"
            );
        }
    }
}

fn assert_sparse(v: &Value) {
    match v {
        Value::Null => panic!("saved overrides hold a null"),
        Value::Object(m) => {
            for child in m.values() {
                assert!(
                    !matches!(child, Value::Object(o) if o.is_empty()),
                    "saved overrides hold an empty object"
                );
                assert_sparse(child);
            }
        }
        Value::Array(list) => list.iter().for_each(assert_sparse),
        _ => {}
    }
}
