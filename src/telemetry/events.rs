//! Domain events: each method records the metric and, where an on-call
//! engineer needs it, the log line — together, from one place (the
//! `internal_events` pattern). The service calls these; it never names a metric.

use super::catalog::{self, values};
use super::metrics::Metrics;
use crate::clock::Millis;
use crate::sessions::model::{EndReason, Session};
use metrics::Label;
use std::sync::Arc;
use std::time::Duration;

/// The events of one application instance.
pub struct Events {
    metrics: Arc<Metrics>,
    /// Tool sets not configured here whose sessions the store still held at
    /// the last sweep (removed from the file, or another replica's): their
    /// gauge goes to 0 when the last of those ends, not stays where it was.
    other_tool_sets: parking_lot::Mutex<Vec<Arc<str>>>,
}

impl Events {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics, other_tool_sets: Default::default() }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every series whose label values are known up front starts at 0, so rates
    /// and dashboards have data from the first scrape.
    pub fn initialise(&self, tool_sets: &[Arc<str>], store_backend: &'static str) {
        let m = &self.metrics;
        m.set_build_info(store_backend);
        m.gauge(catalog::STORE_UP, vec![Label::new("backend", store_backend)]).set(1.0);
        for op in values::STORE_OPERATIONS {
            m.counter(catalog::STORE_ERRORS, store_labels(store_backend, op)).absolute(0);
        }
        for ts in tool_sets {
            m.counter(catalog::SESSIONS_CREATED, vec![Label::new("tool_set", ts.clone())]).absolute(0);
            m.gauge(catalog::SESSIONS_ACTIVE, vec![Label::new("tool_set", ts.clone())]).set(0.0);
            for to in tool_sets.iter().filter(|to| *to != ts) {
                m.counter(catalog::SESSION_MIGRATIONS, migration_labels(ts, to)).absolute(0);
            }
        }
        for reason in EndReason::ALL {
            m.counter(catalog::SESSIONS_ENDED, vec![Label::new("reason", reason.as_str())]).absolute(0);
        }
        for action in values::LIMIT_ACTIONS {
            m.counter(catalog::SESSION_LIMIT_HITS, vec![Label::new("action", action)]).absolute(0);
        }
        for reason in values::AUTH_FAILURE_REASONS {
            m.counter(catalog::AUTH_FAILURES, vec![Label::new("reason", reason)]).absolute(0);
        }
        m.counter(catalog::SESSION_HEARTBEATS, vec![]).absolute(0);
        m.counter(catalog::IDEMPOTENCY_KEYS_EXHAUSTED, vec![]).absolute(0);
        m.counter(catalog::REQUESTS_SHED, vec![]).absolute(0);
        for source in values::CONFIG_SOURCES {
            m.counter(catalog::CONFIG_CHANGES, vec![Label::new("source", source)]).absolute(0);
        }
        for outcome in values::TOPOLOGY_OUTCOMES {
            m.counter(catalog::STORE_TOPOLOGY_REFRESHES, vec![Label::new("outcome", outcome)]).absolute(0);
        }
        for reason in crate::auth::keys::Skipped::REASONS {
            m.counter(catalog::JWKS_KEYS_SKIPPED, vec![Label::new("reason", reason)]).absolute(0);
        }
        for outcome in values::JWKS_OUTCOMES {
            m.counter(catalog::JWKS_REFRESHES, vec![Label::new("outcome", outcome)]).absolute(0);
        }
        m.gauge(catalog::SESSIONS_EXPIRED_PENDING, vec![]).set(0.0);
    }

    pub fn session_created(&self, session: &Session) {
        self.metrics
            .counter(catalog::SESSIONS_CREATED, vec![Label::new("tool_set", session.tool_set.clone())])
            .increment(1);
    }

    /// A session ended at `ended_at` (for an expiry: its expiry instant, not
    /// the moment the reaper noticed).
    pub fn session_ended(&self, session: &Session, reason: EndReason, ended_at: Millis) {
        let label = || vec![Label::new("reason", reason.as_str())];
        self.metrics.counter(catalog::SESSIONS_ENDED, label()).increment(1);
        let lifetime = (ended_at - session.created_at).max(0) as f64 / 1000.0;
        self.metrics.histogram(catalog::SESSION_LIFETIME, label()).record(lifetime);
        if matches!(reason, EndReason::Evicted | EndReason::Revoked) {
            tracing::info!(
                event = "session_ended",
                reason = reason.as_str(),
                session_id = %session.id,
                user_id = %session.user_id,
                tool_set = %session.tool_set,
                "session {}", reason.as_str()
            );
        }
    }

    pub fn session_limit_hit(&self, evicted: bool) {
        let action = if evicted { "evicted" } else { "rejected" };
        self.metrics.counter(catalog::SESSION_LIMIT_HITS, vec![Label::new("action", action)]).increment(1);
    }

    pub fn idempotency_keys_exhausted(&self) {
        self.metrics.counter(catalog::IDEMPOTENCY_KEYS_EXHAUSTED, vec![]).increment(1);
    }

    pub fn session_migrated(&self, from: &Arc<str>, to: &Arc<str>) {
        self.metrics.counter(catalog::SESSION_MIGRATIONS, migration_labels(from, to)).increment(1);
    }

    pub fn heartbeat(&self) {
        self.metrics.counter(catalog::SESSION_HEARTBEATS, vec![]).increment(1);
    }

    pub fn agent_query(&self, tool_set: &Arc<str>, outcome: &'static str, duration: Duration) {
        self.metrics
            .histogram(
                catalog::AGENT_QUERY_DURATION,
                vec![Label::new("tool_set", tool_set.clone()), Label::new("outcome", outcome)],
            )
            .record(duration.as_secs_f64());
    }

    /// Rate-limit series start at 0 for every configured policy.
    pub fn initialise_rate_limits(&self, policies: &[Arc<str>]) {
        let m = &self.metrics;
        for p in policies {
            for d in values::RATELIMIT_DECISIONS {
                m.ratelimit_decision(p, d).absolute(0);
            }
            m.counter(catalog::RATELIMIT_STORE_ERRORS, vec![Label::new("policy", p.clone())]).absolute(0);
        }
        m.ratelimit_decision(values::PER_IP_POLICY, "limited").absolute(0);
    }

    pub fn ratelimit_decision(&self, policy: &Arc<str>, decision: &'static str) {
        self.metrics.ratelimit_decision(policy, decision).increment(1);
    }

    pub fn per_ip_limited(&self) {
        self.metrics.ratelimit_decision(values::PER_IP_POLICY, "limited").increment(1);
    }

    /// Counted every time; logged at debug (a dead store is reported once by
    /// the store's own availability events).
    pub fn ratelimit_store_error(&self, policy: &Arc<str>, error: &str) {
        self.metrics
            .counter(catalog::RATELIMIT_STORE_ERRORS, vec![Label::new("policy", policy.clone())])
            .increment(1);
        tracing::debug!(policy = %policy, %error, "rate-limit store error");
    }

    /// Runtime config changed: who (for `api`), what (the merge patch), from where.
    pub fn config_changed(&self, source: &'static str, admin: Option<&str>, change: &serde_json::Value) {
        self.metrics.counter(catalog::CONFIG_CHANGES, vec![Label::new("source", source)]).increment(1);
        tracing::info!(event = "config_changed", source, admin = admin.unwrap_or(""), change = %change, "runtime config changed");
    }

    /// One store operation finished.
    pub fn store_operation(&self, backend: &'static str, operation: &'static str, took: Duration, ok: bool) {
        self.metrics.store_duration(backend, operation).record(took.as_secs_f64());
        if !ok {
            self.metrics.counter(catalog::STORE_ERRORS, store_labels(backend, operation)).increment(1);
        }
    }

    /// The store was lost or regained: one log line each way, and the gauge.
    pub fn store_availability(&self, backend: &'static str, up: bool, why: Option<&str>) {
        self.metrics.gauge(catalog::STORE_UP, vec![Label::new("backend", backend)]).set(if up {
            1.0
        } else {
            0.0
        });
        if up {
            tracing::info!(event = "store_regained", backend, "session store reachable again");
        } else {
            tracing::error!(
                event = "store_lost",
                backend,
                error = why.unwrap_or(""),
                "session store unreachable"
            );
        }
    }

    /// A request refused at once: `server.max_in_flight` were being served.
    /// Counted only; a flood would otherwise log a line per refusal (the
    /// access log has each one's line already).
    pub fn request_shed(&self) {
        self.metrics.counter(catalog::REQUESTS_SHED, vec![]).increment(1);
    }

    /// One Redis Cluster node stopped or started answering (`node`:
    /// `host:port`); logged once each way. The store's own availability
    /// follows from all of them.
    pub fn redis_node_availability(&self, node: &str, up: bool, why: Option<&str>) {
        if up {
            tracing::info!(event = "redis_node_regained", node, "Redis Cluster node answers again");
        } else {
            tracing::warn!(
                event = "redis_node_lost",
                node,
                error = why.unwrap_or(""),
                "Redis Cluster node unreachable"
            );
        }
    }

    /// A Redis Cluster slot-map refresh finished: the new map's summary when
    /// it changed (logged), `None` when it did not, or why it failed (logged
    /// when `log`: the first of a streak of failures).
    pub fn redis_topology_refreshed(&self, result: Result<Option<&str>, &str>, log: bool) {
        let outcome = match result {
            Ok(Some(_)) => "changed",
            Ok(None) => "unchanged",
            Err(_) => "error",
        };
        self.metrics
            .counter(catalog::STORE_TOPOLOGY_REFRESHES, vec![Label::new("outcome", outcome)])
            .increment(1);
        match result {
            Ok(Some(slots)) => {
                tracing::info!(event = "redis_topology_changed", slots, "Redis Cluster slot map changed")
            }
            Err(error) if log => {
                tracing::warn!(
                    event = "redis_topology_refresh_failed",
                    error,
                    "Redis Cluster slot map could not be read"
                )
            }
            _ => {}
        }
    }

    /// A JWKS fetch finished: how many usable keys, or why it failed (the
    /// last good keys stay in use).
    pub fn jwks_refreshed(&self, result: Result<usize, &str>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.counter(catalog::JWKS_REFRESHES, vec![Label::new("outcome", outcome)]).increment(1);
        match result {
            Ok(keys) => tracing::debug!(event = "jwks_refreshed", keys, "JWKS fetched"),
            Err(error) => {
                tracing::warn!(event = "jwks_refresh_failed", %error, "JWKS fetch failed; keeping the last good keys")
            }
        }
    }

    /// A key of a fetched JWKS was left out: counted; a weak key is warned of
    /// (its tokens will be refused), an unsupported one only noted.
    pub fn jwks_key_skipped(&self, kid: Option<&str>, skipped: &crate::auth::keys::Skipped) {
        self.metrics
            .counter(catalog::JWKS_KEYS_SKIPPED, vec![Label::new("reason", skipped.reason)])
            .increment(1);
        let kid = kid.unwrap_or("");
        if skipped.reason == crate::auth::keys::Skipped::WEAK {
            tracing::warn!(event = "jwks_key_skipped", kid, reason = skipped.reason, why = %skipped.why, "JWKS key skipped; tokens naming it are refused");
        } else {
            tracing::debug!(event = "jwks_key_skipped", kid, reason = skipped.reason, why = %skipped.why, "JWKS key skipped");
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.metrics.counter(catalog::AUTH_FAILURES, vec![Label::new("reason", reason)]).increment(1);
    }

    /// Expired sessions the reaper removed (each reported exactly once).
    pub fn reaper_swept_sessions(&self, expired: &[Session]) {
        for s in expired {
            self.session_ended(s, EndReason::Expired, s.expires_at);
        }
    }

    /// The end of a sweep: one log line if anything expired, and the store's
    /// figures after it.
    pub fn reaper_finished(
        &self,
        removed: usize,
        active_by_tool_set: &[(Arc<str>, u64)],
        known_tool_sets: &[Arc<str>],
        expired_pending: u64,
        now: Millis,
    ) {
        if removed > 0 {
            tracing::info!(event = "sessions_expired", count = removed, "reaper removed expired sessions");
        }
        let active_gauge = |ts: &Arc<str>, n: u64| {
            self.metrics
                .gauge(catalog::SESSIONS_ACTIVE, vec![Label::new("tool_set", ts.clone())])
                .set(n as f64);
        };
        for ts in known_tool_sets {
            active_gauge(ts, active_by_tool_set.iter().find(|(t, _)| t == ts).map_or(0, |(_, n)| *n));
        }
        let mut others = self.other_tool_sets.lock();
        others.retain(|ts| {
            let present = active_by_tool_set.iter().any(|(t, _)| t == ts);
            if !present {
                active_gauge(ts, 0);
            }
            present
        });
        for (ts, n) in active_by_tool_set.iter().filter(|(t, _)| !known_tool_sets.contains(t)) {
            active_gauge(ts, *n);
            if !others.contains(ts) {
                others.push(ts.clone());
            }
        }
        self.metrics.gauge(catalog::SESSIONS_EXPIRED_PENDING, vec![]).set(expired_pending as f64);
        self.metrics.gauge(catalog::REAPER_LAST_SWEEP, vec![]).set(now as f64 / 1000.0);
    }
}

fn store_labels(backend: &'static str, operation: &'static str) -> Vec<Label> {
    vec![Label::new("backend", backend), Label::new("operation", operation)]
}

fn migration_labels(from: &Arc<str>, to: &Arc<str>) -> Vec<Label> {
    vec![Label::new("from_tool_set", from.clone()), Label::new("to_tool_set", to.clone())]
}
