//! The HTTP surface: state, the one router-building function, handlers,
//! extractors, middleware and the problem+json error type.
//!
//! It talks to the session service and the authenticator; it never touches a
//! storage backend directly.

pub mod dto;
pub mod envelope;
pub mod extract;
mod gate;
pub mod handlers;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod serve;

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::ratelimit::RateLimiter;
use crate::ratelimit::per_ip::ClientIp;
use crate::sessions::SessionService;
use crate::telemetry::{Events, Metrics};
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What every handler can reach: one `Arc`, so each middleware layer's clone
/// of the state is a single reference count.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub service: Arc<SessionService>,
    pub auth: Arc<Authenticator>,
    pub events: Arc<Events>,
    pub metrics: Arc<Metrics>,
    /// Set when shutdown starts: `/readyz` fails so load balancers move on.
    pub draining: Arc<AtomicBool>,
    pub limiter: Arc<RateLimiter>,
    /// The per-IP GCRA; `None` when `rate_limit.per_ip.per_second = 0`.
    pub per_ip: Option<Arc<PerIp>>,
    pub runtime: Arc<crate::live_config::RuntimeConfig>,
    /// `/openapi.json`, rendered once: it depends only on the configured tool sets.
    pub openapi: Arc<str>,
    /// `server.max_body_bytes` and `server.request_timeout`, applied by the envelope.
    pub max_body_bytes: usize,
    pub request_timeout: std::time::Duration,
    /// `server.max_in_flight`: the requests being served, and the bound.
    pub in_flight: InFlightBound,
}

/// The requests being served at once, bounded: past the bound a request is
/// refused at once (`503 OVERLOADED`) instead of queueing behind the others,
/// so latency under a flood stays that of the admitted requests. An atomic
/// count, taken and given back once per request.
pub struct InFlightBound {
    serving: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// One admitted request's place; given back when dropped.
pub struct InFlightSlot<'a>(&'a InFlightBound);

impl InFlightBound {
    pub fn new(max: usize) -> Self {
        Self { serving: Default::default(), max }
    }

    /// A place for one more request, or `None` when `max` are being served.
    pub fn try_enter(&self) -> Option<InFlightSlot<'_>> {
        use std::sync::atomic::Ordering;
        if self.serving.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.serving.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightSlot(self))
    }
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The per-IP limiter's configuration (tower-governor, keyed by client IP).
pub type PerIpConfig =
    tower_governor::governor::GovernorConfig<ClientIp, governor::middleware::NoOpMiddleware>;

/// The per-IP limit: governor's keyed GCRA as tower-governor configures it,
/// checked by the gate (`gate.rs`, not as a layer of its own), and the
/// client-IP key it is checked under.
pub struct PerIp {
    pub config: PerIpConfig,
    pub client_ip: ClientIp,
}

/// Every gated route as `METHOD /template`: what rate-limit policies may
/// name (from the route table).
pub fn limitable_routes() -> &'static [&'static str] {
    routes::limitable_routes()
}

/// The per-IP layer's configuration, or `None` when it is off.
pub fn per_ip_config(per_second: u32, burst: u32, trusted: &[ipnet::IpNet]) -> Option<Arc<PerIp>> {
    if per_second == 0 {
        return None;
    }
    let client_ip = ClientIp::new(trusted);
    tower_governor::governor::GovernorConfigBuilder::default()
        .period(std::time::Duration::from_nanos(1_000_000_000 / u64::from(per_second)))
        .burst_size(burst)
        .key_extractor(client_ip.clone())
        .finish()
        .map(|config| Arc::new(PerIp { config, client_ip }))
}

/// The whole HTTP service of the main listener: the envelope, the gate and
/// every route (`routes::table`). `serve_metrics` is false when `/metrics`
/// has its own listener.
pub fn router(state: AppState, server: &ServerConfig, serve_metrics: bool) -> envelope::App {
    let table = routes::table(serve_metrics);
    let router = table.router.with_state(state.clone());
    let cors = (!server.cors_allowed_origins.is_empty()).then(|| cors(&server.cors_allowed_origins));
    envelope::App::new(state, table.routes, router, cors)
}

/// The metrics-only router for `server.metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(handlers::metrics)).with_state(state)
}

/// Only the configured origins; nothing is allowed by default.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
            // W3C trace context: browser tracing (OpenTelemetry-web, Faro)
            // sends both on every call, and a preflight that refuses them
            // fails the call itself.
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            axum::http::header::LOCATION,
            axum::http::header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotent-replayed"),
            // A frontend reads its remaining quota and the auth challenge.
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            axum::http::header::WWW_AUTHENTICATE,
        ])
        // A browser asks once per ten minutes per URL, not before every call
        // (Chromium caps the cache at two hours, Firefox at a day).
        .max_age(std::time::Duration::from_secs(600))
}
