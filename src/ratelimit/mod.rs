//! Per-principal rate limiting after authentication, and the per-IP layer's
//! key extraction before it.
//!
//! - `window`: the sliding-window maths (pure).
//! - `LimiterBackend`: where counters live (memory here; Redis beside it),
//!   one atomic step per request for all the windows that apply.
//! - `RateLimiter`: which policies apply to a request, the decision, the
//!   metrics, and the IETF `RateLimit-Policy` / `RateLimit` header values.
//! - `per_ip`: the client-IP key for the GCRA layer (trusted proxies).
//!
//! It knows principals and route templates, not sessions, stores or axum.

pub mod headers;
pub mod memory;
pub mod per_ip;
pub mod redis;
pub mod window;

use crate::auth::{Principal, PrincipalKind};
use crate::clock::{Clock, Millis};
use crate::config::{OnStoreError, PolicyKind, RateLimitConfig, parse_route};
use crate::telemetry::Events;
use async_trait::async_trait;
use std::sync::Arc;
use window::Counter;

pub use memory::MemoryLimiter;

/// One configured policy, resolved for fast matching.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: Arc<str>,
    pub kind: PolicyKind,
    pub limit: u64,
    pub window_ms: Millis,
    /// `(method, route template)`; empty: every `/v1` route.
    routes: Vec<(String, String)>,
    pub shadow: bool,
    role_overrides: Vec<(String, u64)>,
    key_overrides: Vec<(String, u64)>,
}

impl Policy {
    pub fn applies(&self, method: &str, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|(m, r)| m == method && r == route)
    }

    /// The limit for this principal: an API-key override wins; otherwise the
    /// most generous matching role override; otherwise the policy's own.
    pub fn limit_for(&self, principal: &Principal) -> u64 {
        if principal.kind == PrincipalKind::ApiKey {
            let id = principal.id.strip_prefix("apikey:").unwrap_or(&principal.id);
            if let Some((_, limit)) = self.key_overrides.iter().find(|(k, _)| k == id) {
                return *limit;
            }
        }
        self.role_overrides
            .iter()
            .filter(|(role, _)| principal.roles.contains(role))
            .map(|(_, limit)| *limit)
            .max()
            .unwrap_or(self.limit)
    }
}

/// The policies of a configuration, in order.
pub fn policies(config: &RateLimitConfig, known_routes: &[&str]) -> anyhow::Result<Vec<Policy>> {
    let mut out = Vec::new();
    for (i, p) in config.policies.iter().enumerate() {
        let mut routes = Vec::new();
        for route in &p.routes {
            let (method, path) = parse_route(route)
                .ok_or_else(|| anyhow::anyhow!("rate_limit.policies[{i}].routes: {route:?} is malformed"))?;
            if !known_routes.contains(&route.as_str()) {
                anyhow::bail!(
                    "rate_limit.policies[{i}].routes: {route:?} is not a route of this API (known: {})",
                    known_routes.join(", ")
                );
            }
            routes.push((method.to_string(), path.to_string()));
        }
        out.push(Policy {
            name: Arc::from(p.name.as_str()),
            kind: p.kind,
            limit: p.limit,
            window_ms: p.window.map_or(0, |w| w.as_millis() as Millis),
            routes,
            shadow: p.shadow || config.shadow,
            role_overrides: p.overrides.iter().filter_map(|o| Some((o.role.clone()?, o.limit))).collect(),
            key_overrides: p.overrides.iter().filter_map(|o| Some((o.api_key.clone()?, o.limit))).collect(),
        });
    }
    Ok(out)
}

/// One window to check for a request.
#[derive(Debug, Clone)]
pub struct WindowCheck {
    /// The policy's index (stable for the process) and name (stable across replicas).
    pub index: usize,
    pub name: Arc<str>,
    pub limit: u64,
    pub window_ms: Millis,
    /// False for shadow policies: their verdict never blocks.
    pub enforce: bool,
}

/// Room for four policies without a heap allocation (a request usually meets
/// one or two).
pub type PerPolicy<T> = smallvec::SmallVec<[T; 4]>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowResult {
    /// Did this window admit the request (before any spending)?
    pub admits: bool,
    /// The counter after the step: spent if the request was admitted.
    pub counter: Counter,
}

#[derive(Debug, thiserror::Error)]
#[error("rate-limit store unavailable: {0}")]
pub struct LimiterError(pub String);

#[async_trait]
pub trait LimiterBackend: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// A check waits for a network round trip (Redis): worth overlapping
    /// with a safe request's own reads (`http::gate::gated`).
    fn remote(&self) -> bool {
        false
    }

    /// Atomically for `principal`: check every window at `now`; if every
    /// enforced one admits, count the request in all of them. Returns whether
    /// it was counted, and each window's result in the order given.
    async fn check_windows(
        &self,
        principal: &str,
        checks: &[WindowCheck],
        now: Millis,
    ) -> Result<(bool, PerPolicy<WindowResult>), LimiterError>;

    /// Take an in-flight slot, named `token`, if fewer than `limit` are
    /// taken; returns the count after taking, or `None` when full.
    async fn acquire(
        &self,
        principal: &str,
        policy: &WindowCheck,
        token: u64,
        now: Millis,
    ) -> Result<Option<u64>, LimiterError>;

    async fn release(&self, principal: &str, policy: &WindowCheck, token: u64);

    /// Release without waiting, when the backend can (in process): then a
    /// client's next request, sent the instant a response arrives, finds its
    /// slot free. Returns false when the release must go through `release`.
    fn release_now(&self, _principal: &str, _policy: &WindowCheck, _token: u64) -> bool {
        false
    }

    /// Forget counters idle for more than their window (memory only).
    async fn sweep(&self, _now: Millis) {}
}

/// The verdict on a request, with what the response must carry.
pub enum Decision {
    /// Go on; add these headers to the response, keep the guard until it is sent.
    Admitted { headers: Option<headers::RateLimitHeaders>, guard: Option<ConcurrencyGuard> },
    /// 429 `RATE_LIMITED`.
    Limited { headers: headers::RateLimitHeaders, retry_after_secs: u64, violated: Vec<Arc<str>> },
    /// The store failed and `on_store_error = "deny"`: 503.
    StoreUnavailable,
}

/// Releases in-flight slots when dropped: on response, error, timeout or
/// client disconnect alike.
pub struct ConcurrencyGuard {
    backend: Arc<dyn LimiterBackend>,
    principal: Arc<str>,
    /// This request's slot name, the same in every policy it holds.
    token: u64,
    held: Vec<WindowCheck>,
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        let backend = self.backend.clone();
        let principal = self.principal.clone();
        let token = self.token;
        self.held.retain(|p| !self.backend.release_now(&self.principal, p, token));
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let release = async move {
            for p in &held {
                backend.release(&principal, p, token).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(release);
            }
            Err(_) => tracing::warn!("concurrency slots not released: no runtime"),
        }
    }
}

/// The 429 for a request that a blocking policy refused.
fn refusal(report: &headers::Report) -> Decision {
    Decision::Limited {
        retry_after_secs: report.retry_after_secs(),
        violated: report.violated(),
        headers: report.render(),
    }
}

pub struct RateLimiter {
    /// Swapped whole when runtime config changes limits or windows.
    policies: arc_swap::ArcSwap<Vec<Policy>>,
    backend: Arc<dyn LimiterBackend>,
    on_store_error: OnStoreError,
    clock: Arc<dyn Clock>,
    events: Arc<Events>,
}

impl RateLimiter {
    /// See [`LimiterBackend::remote`].
    pub fn is_remote(&self) -> bool {
        self.backend.remote()
    }

    /// Does a concurrency policy apply to this route (its slot must be
    /// taken before the handler starts)?
    pub fn caps_in_flight(&self, method: &str, route: &str) -> bool {
        let method = if method == "HEAD" { "GET" } else { method };
        self.policies.load().iter().any(|p| p.kind == PolicyKind::Concurrency && p.applies(method, route))
    }

    pub fn new(
        policies: Vec<Policy>,
        backend: Arc<dyn LimiterBackend>,
        on_store_error: OnStoreError,
        clock: Arc<dyn Clock>,
        events: Arc<Events>,
    ) -> Self {
        Self { policies: arc_swap::ArcSwap::from_pointee(policies), backend, on_store_error, clock, events }
    }

    pub fn policies(&self) -> Arc<Vec<Policy>> {
        self.policies.load_full()
    }

    /// Apply new limits and windows (runtime config). A policy whose window
    /// changed starts from fresh counters: buckets of another length say nothing.
    pub fn set_policies(&self, policies: Vec<Policy>) {
        self.policies.store(Arc::new(policies));
    }

    pub fn backend(&self) -> &Arc<dyn LimiterBackend> {
        &self.backend
    }

    /// Decide a request by `principal` on `method route`. A `HEAD` is the
    /// `GET` it is answered by (axum runs the GET handler), so it meets the
    /// GET route's policies: it cannot be used to get around them.
    pub async fn check(&self, principal: &Principal, method: &str, route: &str) -> Decision {
        let method = if method == "HEAD" { "GET" } else { method };
        let policies = self.policies.load();
        let applicable: PerPolicy<(&Policy, WindowCheck)> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.applies(method, route))
            .map(|(index, p)| {
                let check = WindowCheck {
                    index,
                    name: p.name.clone(),
                    limit: p.limit_for(principal),
                    window_ms: p.window_ms,
                    enforce: !p.shadow,
                };
                (p, check)
            })
            .collect();
        if applicable.is_empty() {
            return Decision::Admitted { headers: None, guard: None };
        }
        let now = self.clock.now_ms();
        let mut report = headers::Report::new(now);

        // In-flight slots first: a request they refuse must not spend window quota.
        let mut guard: Option<ConcurrencyGuard> = None;
        let mut blocked = false;
        for (p, c) in applicable.iter().filter(|(p, _)| p.kind == PolicyKind::Concurrency) {
            let guard = guard.get_or_insert_with(|| ConcurrencyGuard {
                backend: self.backend.clone(),
                principal: principal.id.clone(),
                token: rand::random(),
                held: Vec::new(),
            });
            match self.backend.acquire(&principal.id, c, guard.token, now).await {
                Ok(Some(in_flight)) => {
                    guard.held.push(c.clone());
                    self.events.ratelimit_decision(&p.name, "allowed");
                    report.concurrency(c, in_flight, false);
                }
                Ok(None) if c.enforce => {
                    blocked = true;
                    self.events.ratelimit_decision(&p.name, "limited");
                    report.concurrency(c, c.limit, true);
                }
                Ok(None) => {
                    self.events.ratelimit_decision(&p.name, "shadow_limited");
                    report.concurrency(c, c.limit, false);
                }
                Err(e) => {
                    if let Some(d) = self.store_error(&p.name, c.enforce, &e) {
                        return d;
                    }
                }
            }
        }
        if blocked {
            // `guard` drops here and gives back what this request took.
            return refusal(&report);
        }

        let windows: PerPolicy<WindowCheck> =
            applicable.iter().filter(|(p, _)| p.kind == PolicyKind::Window).map(|(_, c)| c.clone()).collect();
        if !windows.is_empty() {
            match self.backend.check_windows(&principal.id, &windows, now).await {
                Ok((spent, results)) => {
                    for (c, r) in windows.iter().zip(&results) {
                        let decision = match (r.admits, c.enforce) {
                            (true, _) => "allowed",
                            (false, true) => "limited",
                            (false, false) => "shadow_limited",
                        };
                        self.events.ratelimit_decision(&c.name, decision);
                        report.window(c, r, now);
                    }
                    blocked = !spent;
                }
                Err(e) => {
                    let mut denied = None;
                    for c in &windows {
                        denied = denied.or(self.store_error(&c.name, c.enforce, &e));
                    }
                    if let Some(d) = denied {
                        return d;
                    }
                }
            }
        }
        if blocked {
            return refusal(&report);
        }
        let guard = guard.filter(|g| !g.held.is_empty());
        // Every policy's store failed and failures admit: no items, and an
        // empty `RateLimit` field is not a valid structured field.
        let headers = (!report.is_empty()).then(|| report.render());
        Decision::Admitted { headers, guard }
    }

    /// Count a store failure; `Some` when it decides the request: `deny`,
    /// and the policy blocks (a shadow policy never rejects, not even then).
    fn store_error(&self, policy: &Arc<str>, enforce: bool, e: &LimiterError) -> Option<Decision> {
        self.events.ratelimit_store_error(policy, &e.0);
        match self.on_store_error {
            OnStoreError::Deny if enforce => Some(Decision::StoreUnavailable),
            _ => None,
        }
    }

    /// Run `sweep` on the backend every `every` until cancelled.
    pub async fn run_sweeper(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.backend.sweep(self.clock.now_ms()).await,
            }
        }
    }
}
