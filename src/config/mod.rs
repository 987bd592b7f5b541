//! Typed configuration: one TOML file, overridden by `SESSIONGATE__SECTION__KEY`
//! environment variables, validated once at start-up.
//!
//! Everything else receives these structs (or the parts it needs) and never reads
//! the environment itself. This module knows nothing about HTTP, storage engines
//! or how the values are used; it only says what a valid configuration is, and
//! every validation message names the key it is about.

pub mod duration;
pub mod runtime;
mod secret;
mod validate;

pub use secret::Secret;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The environment prefix; `SESSIONGATE__SESSIONS__MAX_PER_USER=20` sets
/// `sessions.max_per_user`.
pub const ENV_PREFIX: &str = "SESSIONGATE__";

/// The largest rate limit: `RateLimit-Policy` carries it as a structured-field
/// Integer, which has at most 15 digits (RFC 9651).
pub const MAX_LIMIT: u64 = 999_999_999_999_999;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub sessions: SessionsConfig,
    pub store: StoreConfig,
    pub rate_limit: RateLimitConfig,
    pub agent: AgentConfig,
    pub tool_sets: Vec<ToolSetConfig>,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Empty: `/metrics` is served on the main listener.
    pub metrics_listen: String,
    /// On SIGTERM, keep serving (with `/readyz` failing) this long before
    /// refusing new connections, so load balancers stop routing here first.
    #[serde(with = "duration")]
    pub shutdown_delay: Duration,
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Longest wait for a request's head (line and headers): slow-header
    /// clients are disconnected after it.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    pub max_body_bytes: usize,
    /// Connections open at once; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Requests being served at once; past it, a new request is answered
    /// `503 OVERLOADED` at once (probes, `/metrics` and `/openapi.json` never).
    pub max_in_flight: usize,
    pub cors_allowed_origins: Vec<String>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: String::new(),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_connections: 10_000,
            max_in_flight: 4096,
            cors_allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The shortest HS256 secret accepted: 256 bits (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// The furthest a token's `exp` may lie in the future (plus leeway);
    /// zero turns the check off.
    #[serde(with = "duration")]
    pub max_token_lifetime: Duration,
    pub hs256_secret: Secret,
    pub hs256_secret_file: String,
    /// PEM public keys (RSA, P-256 or Ed25519); each file's stem is its `kid`.
    pub public_key_files: Vec<String>,
    /// Pinned JWKS location: https, or http on a loopback host.
    pub jwks_url: String,
    #[serde(with = "duration")]
    pub jwks_refresh: Duration,
    /// Least time between two JWKS fetches of any kind.
    #[serde(with = "duration")]
    pub jwks_cooldown: Duration,
    pub admin_role: String,
    pub api_keys: Vec<ApiKeyConfig>,
}

/// A service credential: only the SHA-256 of the key is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    /// Lower-case hex SHA-256 of the key (`sessiongate hash-key` prints one).
    pub sha256: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "sessiongate".into(),
            audience: "sessiongate".into(),
            leeway: Duration::from_secs(30),
            max_token_lifetime: Duration::from_secs(24 * 3600),
            hs256_secret: Secret::default(),
            hs256_secret_file: String::new(),
            public_key_files: Vec::new(),
            jwks_url: String::new(),
            jwks_refresh: Duration::from_secs(300),
            jwks_cooldown: Duration::from_secs(30),
            admin_role: "admin".into(),
            api_keys: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// False when no key material at all is configured: the server then runs
    /// in dev mode.
    pub fn has_key_material(&self) -> bool {
        !self.hs256_secret.is_empty()
            || !self.hs256_secret_file.is_empty()
            || !self.public_key_files.is_empty()
            || !self.jwks_url.is_empty()
            || !self.api_keys.is_empty()
    }

    /// The HS256 secret, read from the file when one is named. Shorter than
    /// `MIN_HS256_SECRET_BYTES` (an empty file included) is an error naming
    /// the key: RFC 7518 §3.2 wants a key at least as long as the hash.
    pub fn load_hs256_secret(&self) -> anyhow::Result<Option<Secret>> {
        use anyhow::Context;
        let (key, secret) = if !self.hs256_secret_file.is_empty() {
            let raw = std::fs::read_to_string(&self.hs256_secret_file)
                .with_context(|| format!("auth.hs256_secret_file: cannot read {}", self.hs256_secret_file))?;
            ("auth.hs256_secret_file", Secret::new(raw.trim_end_matches(['\r', '\n'])))
        } else if !self.hs256_secret.is_empty() {
            ("auth.hs256_secret", self.hs256_secret.clone())
        } else {
            return Ok(None);
        };
        let n = secret.expose().len();
        anyhow::ensure!(
            n >= MIN_HS256_SECRET_BYTES,
            "{key}: the secret is {n} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES} (256 bits, RFC 7518 §3.2)"
        );
        Ok(Some(secret))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    EvictOldest,
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    pub max_per_user: u32,
    #[serde(with = "duration")]
    pub idle_ttl: Duration,
    #[serde(with = "duration")]
    pub max_lifetime: Duration,
    pub on_limit: OnLimit,
    #[serde(with = "duration")]
    pub idempotency_ttl: Duration,
    /// How many unexpired `Idempotency-Key`s one user may hold at once.
    pub max_idempotency_keys_per_user: u32,
    #[serde(with = "duration")]
    pub reaper_interval: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            max_per_user: 10,
            idle_ttl: Duration::from_secs(30 * 60),
            max_lifetime: Duration::from_secs(24 * 3600),
            on_limit: OnLimit::EvictOldest,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_idempotency_keys_per_user: 1000,
            reaper_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// A single Redis (credentials in the URL are redacted when printed).
    pub redis_url: Secret,
    /// Seed nodes of a Redis Cluster, instead of `redis_url`.
    pub redis_cluster_urls: Vec<Secret>,
    /// Prefix of every key, so several deployments can share a Redis.
    pub key_prefix: String,
    /// Bound on every Redis call: a dead or hung Redis is a 503 within this.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// Memory backend: where runtime config changes persist (empty: nowhere).
    pub overrides_file: String,
}

impl StoreConfig {
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            StoreBackend::Memory => "memory",
            StoreBackend::Redis => "redis",
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis_url: Secret::new("redis://127.0.0.1:6379"),
            redis_cluster_urls: Vec::new(),
            key_prefix: "sg".into(),
            command_timeout: Duration::from_secs(1),
            overrides_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Fail open: admit, and count the error.
    Allow,
    /// Fail closed: answer 503.
    Deny,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub on_store_error: OnStoreError,
    /// Decide and count, but never reject (every policy).
    pub shadow: bool,
    pub per_ip: PerIpConfig,
    pub policies: Vec<PolicyConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let window = |name: &str, limit, routes: &[&str]| PolicyConfig {
            name: name.into(),
            kind: PolicyKind::Window,
            limit,
            window: Some(Duration::from_secs(60)),
            routes: routes.iter().map(|r| r.to_string()).collect(),
            shadow: false,
            overrides: Vec::new(),
        };
        Self {
            on_store_error: OnStoreError::Allow,
            shadow: false,
            per_ip: PerIpConfig::default(),
            policies: vec![
                window("default", 600, &[]),
                window("session-create", 30, &["POST /v1/sessions"]),
                PolicyConfig {
                    name: "queries-in-flight".into(),
                    kind: PolicyKind::Concurrency,
                    limit: 4,
                    window: None,
                    routes: vec!["POST /v1/sessions/{id}/queries".into()],
                    shadow: false,
                    overrides: Vec::new(),
                },
            ],
        }
    }
}

/// GCRA per client IP, before authentication. `per_second` tokens are
/// replenished each second into a bucket of `burst`; 0 turns it off.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerIpConfig {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for PerIpConfig {
    fn default() -> Self {
        Self { per_second: 100, burst: 200 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// At most `limit` requests per sliding `window`.
    #[default]
    Window,
    /// At most `limit` requests in flight at once.
    Concurrency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(default)]
    pub kind: PolicyKind,
    pub limit: u64,
    /// Window policies only.
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// `"METHOD /route/{template}"`; empty: every `/v1` route.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub shadow: bool,
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

/// A different limit for principals with a role, or for one API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    Echo,
    Http,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub kind: AgentKind,
    /// Echo only: simulated work per query, for load tests.
    #[serde(with = "duration")]
    pub echo_latency: Duration,
    /// Http only: where queries are POSTed (`http://` or `https://`).
    pub url: String,
    /// Bounds every agent call, whatever the kind.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            kind: AgentKind::Echo,
            echo_latency: Duration::ZERO,
            url: String::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSetConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tools: Vec<String>,
}

/// The tool sets served when the configuration names none, so that
/// `cargo run` gives a usable API out of the box.
pub fn default_tool_sets() -> Vec<ToolSetConfig> {
    let ts = |name: &str, description: &str, tools: &[&str]| ToolSetConfig {
        name: name.into(),
        description: description.into(),
        tools: tools.iter().map(|t| t.to_string()).collect(),
    };
    vec![
        ts("general", "Everyday tools", &["search", "calculator"]),
        ts("research", "Web research and summarising", &["search", "browser", "summarize"]),
        ts("coding", "Code reading and execution", &["code_interpreter", "repo_search"]),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, log_level: "info".into() }
    }
}

/// A configuration that failed to load or validate; each line names its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// File (optional) then environment, then validation.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(vec![format!("--config: file {} does not exist", path.display())]));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::finish(figment.merge(env))
    }

    fn finish(figment: Figment) -> Result<Self, ConfigError> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|e| describe_figment_error(&e)).collect()))?;
        if config.tool_sets.is_empty() {
            config.tool_sets = default_tool_sets();
        }
        config.validate()?;
        Ok(config)
    }

    /// Parse a TOML document (tests and `check-config` use it).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::finish(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)))
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// `"POST /v1/sessions/{id}"` → (`POST`, `/v1/sessions/{id}`).
pub fn parse_route(route: &str) -> Option<(&str, &str)> {
    let (method, path) = route.split_once(' ')?;
    let known = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    (known.contains(&method) && path.starts_with("/v1/") && !path.contains(' ')).then_some((method, path))
}

/// Tool-set names appear in URLs, metric labels and Redis keys: keep them tame.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn describe_figment_error(e: &figment::Error) -> String {
    let key = if e.path.is_empty() { "config".to_string() } else { e.path.join(".") };
    let origin = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
    format!("{key}: {}{origin}", e.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_serve_tool_sets() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.sessions.max_per_user, 10);
        assert_eq!(c.sessions.idle_ttl, Duration::from_secs(1800));
        assert_eq!(c.tool_sets.len(), 3);
    }

    #[test]
    fn durations_parse_from_strings() {
        let c = Config::from_toml("[sessions]\nidle_ttl = \"90s\"\nmax_lifetime = \"2h\"").unwrap();
        assert_eq!(c.sessions.idle_ttl, Duration::from_secs(90));
        assert_eq!(c.sessions.max_lifetime, Duration::from_secs(7200));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("[sessions]\nmax_per_user = 0").unwrap_err().to_string();
        assert!(e.contains("sessions.max_per_user"), "{e}");
        let e = Config::from_toml("[sessions]\nidle_ttl = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("sessions.idle_ttl"), "{e}");
        let e = Config::from_toml("[sessions]\nmax_per_usr = 3").unwrap_err().to_string();
        assert!(e.contains("max_per_usr"), "{e}");
        let e = Config::from_toml("[[tool_sets]]\nname = \"Bad Name\"").unwrap_err().to_string();
        assert!(e.contains("tool_sets[0].name"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn env_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("sg.toml", "[sessions]\nmax_per_user = 5\n")?;
            jail.set_env("SESSIONGATE__SESSIONS__MAX_PER_USER", "20");
            jail.set_env("SESSIONGATE__SESSIONS__ON_LIMIT", "reject");
            let c = Config::load(Some(Path::new("sg.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.sessions.max_per_user, 20);
            assert_eq!(c.sessions.on_limit, OnLimit::Reject);
            Ok(())
        });
    }

    #[test]
    fn bounds_that_keep_timers_finite_are_checked() {
        for (toml, key) in [
            ("[rate_limit]\nper_ip = { per_second = 2000000000, burst = 1 }", "rate_limit.per_ip.per_second"),
            ("[server]\nmax_in_flight = 0", "server.max_in_flight"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            ("[server]\nrequest_timeout = \"2h\"", "server.request_timeout"),
            ("[server]\nrequest_timeout = \"300000000000y\"", "server.request_timeout"),
            ("[auth]\njwks_cooldown = \"0s\"", "auth.jwks_cooldown"),
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        assert!(
            Config::from_toml("[server]\nrequest_timeout = \"1h\"\n[auth]\njwks_cooldown = \"100ms\"")
                .is_ok()
        );
    }

    #[test]
    fn jwks_url_must_be_https_except_on_loopback() {
        use super::validate::jwks_url_allowed;
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:9000/jwks",
            "http://localhost/j",
            "http://[::1]:80/",
        ] {
            assert!(jwks_url_allowed(ok), "{ok}");
        }
        for bad in ["http://idp.example.com/jwks", "ftp://127.0.0.1/", "not a url", "http://10.0.0.1/"] {
            assert!(!jwks_url_allowed(bad), "{bad}");
        }
        let e =
            Config::from_toml("[auth]\njwks_url = \"http://idp.example.com/jwks\"").unwrap_err().to_string();
        assert!(e.contains("auth.jwks_url"), "{e}");
    }

    #[test]
    fn redis_urls_must_be_plain_redis() {
        for toml in [
            "[store]\nbackend = \"redis\"\nredis_url = \"rediss://127.0.0.1:6379\"",
            "[store]\nbackend = \"redis\"\nredis_url = \"unix:///run/redis.sock\"",
            "[store]\nbackend = \"redis\"\nredis_cluster_urls = [\"rediss://127.0.0.1:7000\"]",
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.contains("store.redis_url / store.redis_cluster_urls"), "{toml}: {e}");
        }
        assert!(
            Config::from_toml("[store]\nbackend = \"redis\"\nredis_url = \"redis://:pw@r:6380/2\"").is_ok()
        );
    }

    #[test]
    fn api_keys_are_validated() {
        let e = Config::from_toml("[[auth.api_keys]]\nid = \"billing\"\nsha256 = \"abc\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.api_keys[0].sha256"), "{e}");
    }

    #[test]
    fn redacted_output_hides_secrets() {
        let c = Config::from_toml("[auth]\nhs256_secret = \"super-secret-value-0123456789abcdef\"").unwrap();
        let out = c.to_redacted_toml();
        assert!(!out.contains("super-secret"), "{out}");
        assert!(out.contains("[redacted]"));
    }
}
