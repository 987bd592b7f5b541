//! The metrics catalog: every metric's name, type, unit, help text, labels and
//! buckets, in one table.
//!
//! Call sites never spell a metric name; they go through `Metrics` or the
//! domain events. The table in docs/operations.md is checked against this one by a test.

use metrics::Unit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub buckets: &'static [f64],
}

/// OpenTelemetry's recommended `http.server.request.duration` buckets, with
/// 0.5, 1, 2 and 2.5 ms added at the low end: this service answers in well
/// under 5 ms, and DESIGN.md's latency target (p99 under 2 ms) needs a bound
/// at 2 ms to be read off the histogram.
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0,
];
/// From a second to a day: sessions idle out in minutes and live at most hours.
pub const LIFETIME_BUCKETS: &[f64] =
    &[1.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0];
/// Agent calls range from an echo's microseconds to a model's tens of seconds.
pub const AGENT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// From a memory store's microseconds to a slow Redis's tens of milliseconds,
/// up to the longest command timeout worth having.
pub const STORE_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http_server_active_requests";
pub const SESSIONS_ACTIVE: &str = "sessiongate_sessions_active";
pub const SESSIONS_CREATED: &str = "sessiongate_sessions_created_total";
pub const SESSIONS_ENDED: &str = "sessiongate_sessions_ended_total";
pub const SESSION_LIFETIME: &str = "sessiongate_session_lifetime_seconds";
pub const SESSION_MIGRATIONS: &str = "sessiongate_session_migrations_total";
pub const SESSION_HEARTBEATS: &str = "sessiongate_session_heartbeats_total";
pub const SESSION_LIMIT_HITS: &str = "sessiongate_session_limit_hits_total";
/// Not in DESIGN.md's catalog: without it, a `429 IDEMPOTENCY_KEYS_EXCEEDED`
/// could only be told from a rate-limit refusal by its body.
pub const IDEMPOTENCY_KEYS_EXHAUSTED: &str = "sessiongate_idempotency_keys_exhausted_total";
pub const AGENT_QUERY_DURATION: &str = "sessiongate_agent_query_duration_seconds";
pub const AUTH_FAILURES: &str = "sessiongate_auth_failures_total";
pub const RATELIMIT_DECISIONS: &str = "sessiongate_ratelimit_decisions_total";
pub const RATELIMIT_STORE_ERRORS: &str = "sessiongate_ratelimit_store_errors_total";
pub const STORE_OPERATION_DURATION: &str = "sessiongate_store_operation_duration_seconds";
pub const STORE_ERRORS: &str = "sessiongate_store_errors_total";
pub const CONFIG_CHANGES: &str = "sessiongate_config_changes_total";
pub const STORE_UP: &str = "sessiongate_store_up";
pub const JWKS_KEYS_SKIPPED: &str = "sessiongate_jwks_keys_skipped_total";
pub const REQUESTS_SHED: &str = "sessiongate_requests_shed_total";
pub const STORE_TOPOLOGY_REFRESHES: &str = "sessiongate_store_topology_refreshes_total";
pub const JWKS_REFRESHES: &str = "sessiongate_jwks_refreshes_total";
pub const REAPER_LAST_SWEEP: &str = "sessiongate_reaper_last_sweep_timestamp_seconds";
pub const SESSIONS_EXPIRED_PENDING: &str = "sessiongate_sessions_expired_pending";
pub const BUILD_INFO: &str = "sessiongate_build_info";
/// Not in DESIGN.md's catalog: a leak of tasks (a connection, a request or a
/// background loop that never ends) shows here first.
pub const RUNTIME_ALIVE_TASKS: &str = "sessiongate_runtime_alive_tasks";

pub const CATALOG: &[MetricDef] = &[
    MetricDef {
        name: HTTP_SERVER_REQUEST_DURATION,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Duration of HTTP server requests.",
        labels: &["http_request_method", "http_route", "http_response_status_code"],
        buckets: HTTP_DURATION_BUCKETS,
    },
    MetricDef {
        name: HTTP_SERVER_ACTIVE_REQUESTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Number of active HTTP server requests.",
        labels: &["http_request_method"],
        buckets: &[],
    },
    MetricDef {
        name: SESSIONS_ACTIVE,
        kind: Kind::Gauge,
        unit: None,
        help: "Live sessions (not expired), by tool set; on Redis the global figure, so aggregate with max.",
        labels: &["tool_set"],
        buckets: &[],
    },
    MetricDef {
        name: SESSIONS_CREATED,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions created, by tool set.",
        labels: &["tool_set"],
        buckets: &[],
    },
    MetricDef {
        name: SESSIONS_ENDED,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions ended, by reason (deleted, expired, evicted, revoked).",
        labels: &["reason"],
        buckets: &[],
    },
    MetricDef {
        name: SESSION_LIFETIME,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from a session's creation to its end, by end reason.",
        labels: &["reason"],
        buckets: LIFETIME_BUCKETS,
    },
    MetricDef {
        name: SESSION_MIGRATIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions migrated in place to another tool set.",
        labels: &["from_tool_set", "to_tool_set"],
        buckets: &[],
    },
    MetricDef {
        name: SESSION_HEARTBEATS,
        kind: Kind::Counter,
        unit: None,
        help: "Heartbeats received on live sessions.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: SESSION_LIMIT_HITS,
        kind: Kind::Counter,
        unit: None,
        help: "Creates that found the user at the session cap, by action taken (rejected, evicted).",
        labels: &["action"],
        buckets: &[],
    },
    MetricDef {
        name: IDEMPOTENCY_KEYS_EXHAUSTED,
        kind: Kind::Counter,
        unit: None,
        help: "Creates refused (429 IDEMPOTENCY_KEYS_EXCEEDED): the user already holds sessions.max_idempotency_keys_per_user unexpired keys.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: AGENT_QUERY_DURATION,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Duration of agent calls, by tool set and outcome (ok, error, timeout).",
        labels: &["tool_set", "outcome"],
        buckets: AGENT_BUCKETS,
    },
    MetricDef {
        name: AUTH_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Requests refused by authentication or authorization, by reason.",
        labels: &["reason"],
        buckets: &[],
    },
    MetricDef {
        name: RATELIMIT_DECISIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Rate-limit decisions by policy (configured names, and per_ip) and decision (allowed, limited, shadow_limited).",
        labels: &["policy", "decision"],
        buckets: &[],
    },
    MetricDef {
        name: RATELIMIT_STORE_ERRORS,
        kind: Kind::Counter,
        unit: None,
        help: "Rate-limit checks whose counter store failed, by policy; on_store_error decided them.",
        labels: &["policy"],
        buckets: &[],
    },
    MetricDef {
        name: STORE_OPERATION_DURATION,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Duration of session-store operations, by backend and operation.",
        labels: &["backend", "operation"],
        buckets: STORE_BUCKETS,
    },
    MetricDef {
        name: STORE_ERRORS,
        kind: Kind::Counter,
        unit: None,
        help: "Session-store operations that failed, by backend and operation.",
        labels: &["backend", "operation"],
        buckets: &[],
    },
    MetricDef {
        name: CONFIG_CHANGES,
        kind: Kind::Counter,
        unit: None,
        help: "Runtime config changes applied, by source (api: a PATCH here; replica: another replica's, via Redis; startup: saved overrides loaded).",
        labels: &["source"],
        buckets: &[],
    },
    MetricDef {
        name: STORE_UP,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the session store answers, 0 while it does not.",
        labels: &["backend"],
        buckets: &[],
    },
    MetricDef {
        name: JWKS_KEYS_SKIPPED,
        kind: Kind::Counter,
        unit: None,
        help: "JWKS keys left out of a fetched key set, by reason (weak_key: RSA under 2048 bits; unsupported); each key once while it stays in the set.",
        labels: &["reason"],
        buckets: &[],
    },
    MetricDef {
        name: REQUESTS_SHED,
        kind: Kind::Counter,
        unit: None,
        help: "Requests answered 503 OVERLOADED at once because server.max_in_flight requests were being served.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: STORE_TOPOLOGY_REFRESHES,
        kind: Kind::Counter,
        unit: None,
        help: "Redis Cluster slot-map refreshes, by outcome (changed, unchanged, error); always 0 on a single Redis.",
        labels: &["outcome"],
        buckets: &[],
    },
    MetricDef {
        name: JWKS_REFRESHES,
        kind: Kind::Counter,
        unit: None,
        help: "JWKS fetches (start-up, refresh, unknown kid), by outcome (ok, error).",
        labels: &["outcome"],
        buckets: &[],
    },
    MetricDef {
        name: REAPER_LAST_SWEEP,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Unix time of the reaper's last completed sweep.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: SESSIONS_EXPIRED_PENDING,
        kind: Kind::Gauge,
        unit: None,
        help: "Sessions past their expiry and not yet removed by the reaper.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1; labels carry the version, git revision and store backend.",
        labels: &["version", "revision", "store_backend"],
        buckets: &[],
    },
    MetricDef {
        name: RUNTIME_ALIVE_TASKS,
        kind: Kind::Gauge,
        unit: None,
        help: "Tokio tasks alive in the process (connections, requests, background loops), read at scrape time.",
        labels: &[],
        buckets: &[],
    },
];

/// Label values known in advance.
pub mod values {
    pub const LIMIT_ACTIONS: [&str; 2] = ["rejected", "evicted"];
    pub const RATELIMIT_DECISIONS: [&str; 3] = ["allowed", "limited", "shadow_limited"];
    /// The `policy` label of the per-IP layer (it reports only `limited`).
    pub const PER_IP_POLICY: &str = "per_ip";
    /// The session store's operations, and the Redis rate limiter's
    /// (`ratelimit`: its window check and concurrency slots).
    pub const STORE_OPERATIONS: [&str; 10] =
        ["create", "get", "list", "touch", "delete", "revoke", "reap", "stats", "ping", "ratelimit"];
    pub const CONFIG_SOURCES: [&str; 3] = ["api", "replica", "startup"];
    pub const JWKS_OUTCOMES: [&str; 2] = ["ok", "error"];
    pub const TOPOLOGY_OUTCOMES: [&str; 3] = ["changed", "unchanged", "error"];
    pub const AGENT_OUTCOMES: [&str; 3] = ["ok", "error", "timeout"];
    pub const AUTH_FAILURE_REASONS: [&str; 15] = [
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "bad_issuer",
        "bad_audience",
        "unknown_kid",
        "bad_api_key",
        "ambiguous",
        "forbidden",
        "unsupported_crit",
        "bad_type",
        "lifetime_too_long",
        "issued_in_future",
    ];
    /// The label for requests that matched no route (never the raw path).
    pub const UNMATCHED_ROUTE: &str = "unmatched";
}
