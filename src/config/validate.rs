//! What a valid configuration is: one check per section, each message naming
//! the key it is about. All problems are collected, so one run of
//! `check-config` lists every one.
//!
//! Must not know: how the values are used, or anything of HTTP or storage
//! engines (a URL's shape is checked here, never reached).

use super::*;
use std::collections::HashSet;

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, msg: impl AsRef<str>) {
        if !ok {
            self.0.push(msg.as_ref().to_string());
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        sessions(&self.sessions, &mut p);
        server(&self.server, &mut p);
        auth(&self.auth, &mut p);
        agent(&self.agent, &mut p);
        store(&self.store, &mut p);
        rate_limit(&self.rate_limit, &self.auth, &mut p);
        tool_sets(&self.tool_sets, &mut p);
        telemetry(&self.telemetry, &mut p);
        if p.0.is_empty() { Ok(()) } else { Err(ConfigError(p.0)) }
    }
}

fn sessions(s: &SessionsConfig, p: &mut Problems) {
    p.check(s.max_per_user >= 1, "sessions.max_per_user: must be at least 1");
    p.check(s.max_per_user <= 10_000, "sessions.max_per_user: must be at most 10000");
    // An upper bound keeps every expiry computation far from overflow.
    let year = Duration::from_secs(365 * 86_400);
    p.check(
        s.idle_ttl <= year && s.max_lifetime <= year && s.idempotency_ttl <= year,
        "sessions.idle_ttl / max_lifetime / idempotency_ttl: must be at most 365 days",
    );
    p.check(s.idle_ttl >= Duration::from_secs(1), "sessions.idle_ttl: must be at least 1s");
    p.check(s.max_lifetime >= Duration::from_secs(1), "sessions.max_lifetime: must be at least 1s");
    p.check(s.idempotency_ttl >= Duration::from_secs(1), "sessions.idempotency_ttl: must be at least 1s");
    p.check(
        (1..=100_000).contains(&s.max_idempotency_keys_per_user),
        "sessions.max_idempotency_keys_per_user: must be between 1 and 100000",
    );
    p.check(
        s.reaper_interval >= Duration::from_millis(10),
        "sessions.reaper_interval: must be at least 10ms",
    );
}

fn server(srv: &ServerConfig, p: &mut Problems) {
    p.check(srv.max_body_bytes >= 256, "server.max_body_bytes: must be at least 256");
    p.check(
        (1..=1_000_000).contains(&srv.max_connections),
        "server.max_connections: must be between 1 and 1000000",
    );
    p.check(
        (1..=1_000_000).contains(&srv.max_in_flight),
        "server.max_in_flight: must be between 1 and 1000000",
    );
    // At most an hour: slots and deadlines are derived from it (twice it
    // bounds a concurrency slot), and a larger one is no longer a bound.
    p.check(
        srv.request_timeout >= Duration::from_millis(100) && srv.request_timeout <= Duration::from_secs(3600),
        "server.request_timeout: must be between 100ms and 1h",
    );
    p.check(srv.shutdown_delay <= Duration::from_secs(300), "server.shutdown_delay: must be at most 5m");
    p.check(
        srv.header_read_timeout >= Duration::from_millis(100)
            && srv.header_read_timeout <= Duration::from_secs(300),
        "server.header_read_timeout: must be between 100ms and 5m",
    );
    p.check(
        srv.metrics_listen.is_empty() || srv.metrics_listen.parse::<SocketAddr>().is_ok(),
        "server.metrics_listen: must be empty or an address like 127.0.0.1:9090",
    );
    for origin in &srv.cors_allowed_origins {
        p.check(
            origin.starts_with("http://") || origin.starts_with("https://"),
            format!("server.cors_allowed_origins: {origin:?} must start with http:// or https://"),
        );
    }
}

fn auth(a: &AuthConfig, p: &mut Problems) {
    p.check(!a.issuer.is_empty(), "auth.issuer: must not be empty");
    p.check(!a.audience.is_empty(), "auth.audience: must not be empty");
    p.check(!a.admin_role.is_empty(), "auth.admin_role: must not be empty");
    p.check(
        a.hs256_secret.expose() != "[redacted]",
        "auth.hs256_secret: is the literal \"[redacted]\" copied from check-config output",
    );
    p.check(
        a.hs256_secret.is_empty() || a.hs256_secret_file.is_empty(),
        "auth.hs256_secret: set either hs256_secret or hs256_secret_file, not both",
    );
    if !a.jwks_url.is_empty() {
        p.check(
            jwks_url_allowed(&a.jwks_url),
            "auth.jwks_url: must be an https:// URL (http:// only on a loopback host)",
        );
    }
    // jsonwebtoken computes `now - leeway`: a leeway beyond the epoch overflows.
    p.check(a.leeway <= Duration::from_secs(300), "auth.leeway: must be at most 5m");
    p.check(a.jwks_refresh >= Duration::from_secs(1), "auth.jwks_refresh: must be at least 1s");
    p.check(a.jwks_cooldown <= a.jwks_refresh, "auth.jwks_cooldown: must not exceed auth.jwks_refresh");
    // Zero would let a failing or `max-age=0` endpoint be fetched in a
    // loop, and every unknown `kid` fetch it once.
    p.check(a.jwks_cooldown >= Duration::from_millis(100), "auth.jwks_cooldown: must be at least 100ms");
    let mut ids = HashSet::new();
    for (i, k) in a.api_keys.iter().enumerate() {
        p.check(
            is_valid_name(&k.id),
            format!("auth.api_keys[{i}].id: {:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", k.id),
        );
        p.check(ids.insert(&k.id), format!("auth.api_keys[{i}].id: {:?} is defined twice", k.id));
        p.check(
            k.sha256.len() == 64
                && k.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            format!("auth.api_keys[{i}].sha256: must be 64 lower-case hex digits"),
        );
    }
}

fn agent(agent: &AgentConfig, p: &mut Problems) {
    p.check(agent.timeout >= Duration::from_millis(1), "agent.timeout: must be at least 1ms");
    if agent.kind == AgentKind::Http {
        p.check(
            url::Url::parse(&agent.url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.username().is_empty()
            }),
            "agent.url: must be an http:// or https:// URL (without credentials) when agent.kind = \"http\"",
        );
    }
}

fn store(st: &StoreConfig, p: &mut Problems) {
    p.check(
        is_valid_name(&st.key_prefix),
        "store.key_prefix: must be 1-64 characters of a-z, 0-9, '-', '_' or '.'",
    );
    p.check(
        st.command_timeout >= Duration::from_millis(10) && st.command_timeout <= Duration::from_secs(60),
        "store.command_timeout: must be between 10ms and 60s",
    );
    if st.backend == StoreBackend::Redis {
        let urls: Vec<&Secret> = if st.redis_cluster_urls.is_empty() {
            vec![&st.redis_url]
        } else {
            st.redis_cluster_urls.iter().collect()
        };
        for u in urls {
            p.check(
                u.expose().starts_with("redis://"),
                "store.redis_url / store.redis_cluster_urls: must be redis:// URLs (TLS is not supported)",
            );
        }
    }
}

/// `auth`: a policy override may name an API key, which must exist.
fn rate_limit(rl: &RateLimitConfig, auth: &AuthConfig, p: &mut Problems) {
    p.check(
        rl.per_ip.per_second == 0 || rl.per_ip.burst >= 1,
        "rate_limit.per_ip.burst: must be at least 1 when per_second is set",
    );
    // One token every 1/per_second s, in whole nanoseconds: past 10^9 the
    // period would be zero and the limiter could not be built.
    p.check(
        rl.per_ip.per_second <= 1_000_000_000,
        "rate_limit.per_ip.per_second: must be at most 1000000000 (0 turns the limit off)",
    );
    let mut names = HashSet::new();
    for (i, policy) in rl.policies.iter().enumerate() {
        let key = format!("rate_limit.policies[{i}]");
        p.check(
            is_valid_name(&policy.name),
            format!("{key}.name: {:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", policy.name),
        );
        p.check(names.insert(&policy.name), format!("{key}.name: {:?} is defined twice", policy.name));
        p.check(policy.limit >= 1, format!("{key}.limit: must be at least 1"));
        p.check(policy.limit <= MAX_LIMIT, format!("{key}.limit: must be at most {MAX_LIMIT}"));
        match (policy.kind, policy.window) {
            (PolicyKind::Window, None) => {
                p.check(false, format!("{key}.window: required for a window policy"))
            }
            (PolicyKind::Window, Some(w)) => p.check(
                w >= Duration::from_secs(1) && w.subsec_millis() == 0 && w <= Duration::from_secs(86_400),
                format!("{key}.window: must be whole seconds between 1s and 24h"),
            ),
            (PolicyKind::Concurrency, Some(_)) => {
                p.check(false, format!("{key}.window: a concurrency policy has no window"))
            }
            (PolicyKind::Concurrency, None) => {}
        }
        for (j, route) in policy.routes.iter().enumerate() {
            p.check(
                parse_route(route).is_some(),
                format!("{key}.routes[{j}]: {route:?} must look like \"POST /v1/sessions\""),
            );
        }
        for (j, o) in policy.overrides.iter().enumerate() {
            p.check(
                o.role.is_some() != o.api_key.is_some(),
                format!("{key}.overrides[{j}]: set exactly one of role or api_key"),
            );
            p.check(o.limit >= 1, format!("{key}.overrides[{j}].limit: must be at least 1"));
            p.check(o.limit <= MAX_LIMIT, format!("{key}.overrides[{j}].limit: must be at most {MAX_LIMIT}"));
            if let Some(id) = &o.api_key {
                p.check(
                    auth.api_keys.iter().any(|k| &k.id == id),
                    format!("{key}.overrides[{j}].api_key: no auth.api_keys entry has id {id:?}"),
                );
            }
        }
    }
}

fn tool_sets(tool_sets: &[ToolSetConfig], p: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, ts) in tool_sets.iter().enumerate() {
        p.check(
            is_valid_name(&ts.name),
            format!(
                "tool_sets[{i}].name: {:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'",
                ts.name
            ),
        );
        p.check(seen.insert(&ts.name), format!("tool_sets[{i}].name: {:?} is defined twice", ts.name));
    }
}

fn telemetry(t: &TelemetryConfig, p: &mut Problems) {
    p.check(
        tracing_subscriber::EnvFilter::try_new(&t.log_level).is_ok(),
        "telemetry.log_level: not a valid level or filter (e.g. \"info\" or \"sessiongate=debug\")",
    );
}

/// RFC 8725: keys come from a pinned location, over TLS unless it is this host.
pub(super) fn jwks_url_allowed(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host().is_some(),
        Ok(u) if u.scheme() == "http" => match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}
