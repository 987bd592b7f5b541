//! The service every request of the main listener goes through (`App`): the
//! envelope, then the gate, then axum's router.
//!
//! The envelope is outermost: it looks up the request's route (`routes`),
//! settles the request id, opens the server span, applies the body limit and
//! the request timeout, turns a panic into a 500, measures the request,
//! renders every error as problem+json (stamping request id and trace id),
//! and writes the one log line per request. Because it is outermost, a 401,
//! 408 or 429 is still traced, counted and logged.
//!
//! The gate guards every route that is not `Access::Open`: the per-IP limit,
//! authentication, the per-principal limits, the admin role.
//!
//! Both are plain code around the router, not axum layers: a layer wraps
//! every route in one more boxed service, cloned, boxed again and called per
//! request (what the two layers this replaced cost, as last measured:
//! `docs/performance.md#hand-written-fast-paths--ledger`). A request costs one boxed future here. With CORS on, CORS
//! must sit between the envelope and the gate (a 401 or 429 needs its
//! headers, and a preflight never meets the gate), so CORS, the guard and the
//! gate are then one boxed tower stack. Knows nothing of what handlers do.

use super::AppState;
use super::problem::{PROBLEM_JSON, PendingProblem, Problem, ServerFault};
use super::routes::{Access, RouteInfo, Routes};
use crate::auth::Principal;
use crate::telemetry::RequestContext;
use crate::telemetry::catalog::values;
use crate::telemetry::log_format::{self, AccessLine};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Response, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use opentelemetry::trace::TraceId;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_http::cors::CorsLayer;
use tracing::{Instrument, field};

/// The main listener's service: envelope → gate → router (see the module note).
#[derive(Clone)]
pub struct App(Arc<AppInner>);

struct AppInner {
    state: AppState,
    routes: Routes,
    inner: Inner,
}

enum Inner {
    /// No CORS: the envelope guards and gates, then calls the router.
    Direct(Router),
    /// CORS on: CORS → guard → gate → router, one boxed stack; the envelope
    /// hands it the route it found as a `Matched` extension.
    Cors(BoxCloneSyncService<Request, Response<Body>, Infallible>),
}

/// The route the envelope found, for the gate inside the CORS stack.
#[derive(Clone, Copy)]
struct Matched(Option<RouteInfo>);

impl App {
    pub fn new(state: AppState, routes: Routes, router: Router, cors: Option<CorsLayer>) -> Self {
        use tower::Layer;
        let inner = match cors {
            None => Inner::Direct(router),
            Some(cors) => {
                // The gate and the router as a service, for the CORS stack.
                let gate_state = state.clone();
                let gated = tower::service_fn(move |req: Request| {
                    let (state, router) = (gate_state.clone(), router.clone());
                    let found = req.extensions().get::<Matched>().and_then(|m| m.0);
                    async move { Ok::<_, Infallible>(gated(&state, found, req, &router).await) }
                });
                let guarded = axum::middleware::from_fn_with_state(state.clone(), guard).layer(gated);
                Inner::Cors(BoxCloneSyncService::new(cors.layer(guarded)))
            }
        };
        App(Arc::new(AppInner { state, routes, inner }))
    }
}

impl tower::Service<Request> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(envelope(self.0.clone(), req))
    }
}

/// The router's answer (`Router`'s service is always ready). Not an `async
/// fn`: the router takes the request at once, so no future of ours holds
/// another copy of it.
fn route(router: &Router, req: Request) -> impl Future<Output = Response<Body>> + use<> {
    use futures::FutureExt;
    tower::Service::call(&mut router.clone(), req).map(|answer| match answer {
        Ok(response) => response,
        Err(never) => match never {},
    })
}

// Statics, not `&str`s: a lookup by a string parses the name every time.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// A client-sent request id is kept when it is short and plain; otherwise a
/// new one is made, so ids are safe to log and echo.
fn accept_request_id(value: Option<&HeaderValue>) -> Arc<str> {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(Arc::from)
        .unwrap_or_else(|| {
            Arc::from(&*uuid::Uuid::now_v7().as_hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()))
        })
}

/// `http.request.method` per the semantic conventions: known methods as-is,
/// anything else `_OTHER`, so the label stays bounded.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// The handler's answer; a 408 once `deadline` has passed (the handler's
/// future is dropped); a 500 when it panicked (a bug, logged by the envelope
/// with the panic message) instead of a dropped connection. (Not an `async
/// fn`: that would hold the handler's future twice, unstarted and inside the
/// timeout.)
fn guarded(
    handler: impl std::future::Future<Output = Response<Body>>,
    deadline: Instant,
) -> impl std::future::Future<Output = Response<Body>> {
    use futures::FutureExt;
    let deadline = tokio::time::Instant::from_std(deadline);
    tokio::time::timeout_at(deadline, std::panic::AssertUnwindSafe(handler).catch_unwind()).map(|outcome| {
        match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                super::problem::ApiError::Internal(anyhow::anyhow!("handler panicked: {what}"))
                    .into_response()
            }
            Err(_) => axum::http::StatusCode::REQUEST_TIMEOUT.into_response(),
        }
    })
}

/// The timeout and panic guard as a layer of its own, inside CORS when CORS
/// is configured.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response<Body> {
    guarded(next.run(req), deadline(Instant::now(), state.request_timeout)).await
}

/// `from + timeout`, or practically never for a timeout past what an
/// `Instant` can hold (the setting has no upper bound).
fn deadline(from: Instant, timeout: std::time::Duration) -> Instant {
    from.checked_add(timeout).unwrap_or_else(|| from + std::time::Duration::from_secs(30 * 365 * 86_400))
}

/// The envelope's work before the request runs, done at once; the rest is
/// one future (`respond`), run inside the request's context. (A future
/// holds each of its arguments for its whole life: the fewer nested `async
/// fn`s a request passes through, the fewer copies of it a request's future
/// carries and moves.)
fn envelope(
    app: Arc<AppInner>,
    mut req: Request,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send {
    let started = Instant::now();
    let request_id = accept_request_id(req.headers().get(&REQUEST_ID));
    let method = method_label(req.method());
    let found = app.routes.find(req.uri().path());
    // The route template when one matched (spans name unmatched requests by method only).
    let matched = found.map(|r| r.template);

    // Recorded only when spans are exported (see `telemetry::otel`); otherwise
    // disabled, and every use of it below costs nothing.
    let span = tracing::info_span!(
        "request",
        otel.name = %match matched { Some(r) => format!("{method} {r}"), None => method.to_string() },
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = method,
        http.route = matched,
        url.path = req.uri().path(),
        url.scheme = "http",
        network.protocol.version = protocol_version(req.version()),
        user_agent.original = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    );
    let context = RequestContext::for_request(request_id, req.headers(), &span);
    // The request's deadline, from its start: the guard's, and the context's
    // for the work inside that must end before it (the agent call).
    let ends = deadline(started, app.state.request_timeout);
    context.deadline.set(Some(ends));
    // Only a request with a body needs the limit (it is one more extension,
    // boxed, per request).
    if !axum::body::HttpBody::is_end_stream(req.body()) {
        axum::extract::DefaultBodyLimit::max(app.state.max_body_bytes).apply(&mut req);
    }
    let request = Started { started, deadline: ends, method, found, trace_id: context.trace_id, span };
    let request_id = context.request_id.clone();
    context.scope(respond(app, req, request, request_id))
}

/// The CORS stack's answer, in a box of its own: this path's state stays
/// out of every request's future.
fn through_cors(
    stack: &BoxCloneSyncService<Request, Response<Body>, Infallible>,
    found: Option<RouteInfo>,
    mut req: Request,
) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
    req.extensions_mut().insert(Matched(found));
    let answer = stack.clone().oneshot(req);
    Box::pin(async move {
        match answer.await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    })
}

/// What the envelope settled before the request ran.
struct Started {
    started: Instant,
    deadline: Instant,
    method: &'static str,
    found: Option<RouteInfo>,
    trace_id: TraceId,
    span: tracing::Span,
}

async fn respond(
    app: Arc<AppInner>,
    req: Request,
    request: Started,
    request_id: Arc<str>,
) -> Result<Response<Body>, Infallible> {
    let Started { started, deadline, method, found, trace_id, span } = request;
    let state = &app.state;
    let route = found.map_or(values::UNMATCHED_ROUTE, |r| r.template);
    let metrics = &state.metrics;
    let in_flight = InFlight::start(metrics, method, route, started);
    let mut response = match &app.inner {
        // Boxed: the guard's wrappers each move what they wrap.
        Inner::Direct(router) => {
            guarded(Box::pin(gated(state, found, req, router)), deadline).instrument(span.clone()).await
        }
        Inner::Cors(stack) => through_cors(stack, found, req).instrument(span.clone()).await,
    };
    in_flight.answered();

    let status = response.status();
    if let Some(PendingProblem(problem)) = response.extensions_mut().remove::<PendingProblem>() {
        response = render_problem(problem, &request_id, &trace_id, response);
    } else if (status.is_client_error() || status.is_server_error()) && !is_problem(&response) {
        response = render_problem(Problem::for_status(status), &request_id, &trace_id, response);
    }
    // The request id and the four security headers, in one growth.
    response.headers_mut().reserve(5);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    security_headers(response.headers_mut());

    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }

    let elapsed = started.elapsed();
    metrics.http_duration(method, route, status.as_u16()).record(elapsed.as_secs_f64());

    // One line per request; `request_id`, `trace_id` and `span_id` come
    // from the request context.
    let principal = RequestContext::with_current(|c| c.map_or("none", |c| c.principal.get()));
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let status = status.as_u16();
    if let Some(ServerFault(cause)) = response.extensions().get::<ServerFault>() {
        tracing::error!(
            http.request.method = method, http.route = route,
            http.response.status_code = status, duration_ms, principal, error = %cause,
            "request failed"
        );
    } else if route.starts_with("/v1/") || status >= 400 {
        log_access(AccessLine { method, route, status, duration_ms, principal });
    } else {
        tracing::debug!(
            http.request.method = method,
            http.route = route,
            http.response.status_code = status,
            duration_ms,
            "request"
        );
    }
    Ok(response)
}

/// `network.protocol.version` as OpenTelemetry's semantic conventions spell
/// it: `1.1`, not `HTTP/1.1`.
fn protocol_version(v: axum::http::Version) -> &'static str {
    use axum::http::Version;
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// A request between its start and its answer: its share of the in-flight
/// gauge. When the client goes away first, hyper drops the request's future
/// at its await point and `respond` never resumes; then this, dropped with it,
/// still takes the request off the gauge, measures it and writes its line,
/// as 499 (nginx's "client closed request"; no response is sent).
struct InFlight<'a> {
    metrics: &'a crate::telemetry::metrics::Metrics,
    active: metrics::Gauge,
    method: &'static str,
    route: &'static str,
    started: Instant,
    answered: bool,
}

/// The status a request the client abandoned is counted and logged with.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl<'a> InFlight<'a> {
    fn start(
        metrics: &'a crate::telemetry::metrics::Metrics,
        method: &'static str,
        route: &'static str,
        started: Instant,
    ) -> Self {
        let active = metrics.http_active(method);
        active.increment(1.0);
        Self { metrics, active, method, route, started, answered: false }
    }

    /// The handler answered: the caller measures and logs the response.
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.active.decrement(1.0);
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        let status = CLIENT_CLOSED_REQUEST;
        self.metrics.http_duration(self.method, self.route, status).record(elapsed.as_secs_f64());
        let principal = RequestContext::with_current(|c| c.map_or("none", |c| c.principal.get()));
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        log_access(AccessLine { method: self.method, route: self.route, status, duration_ms, principal });
    }
}

/// A request's one access line: written straight to the log writer when ours
/// is installed (the same line; see `log_format::access`).
fn log_access(line: AccessLine) {
    if !log_format::writes_access_lines() {
        log_format::access_event!(line);
    } else if tracing::enabled!(kind: tracing::metadata::Kind::EVENT, tracing::Level::INFO) {
        log_format::access(module_path!(), &line);
    }
}

/// The OWASP REST headers for an API that serves per-user JSON: never cached
/// by anyone, never sniffed into another type, never framed. (HSTS belongs to
/// whoever terminates TLS.)
fn security_headers(headers: &mut axum::http::HeaderMap) {
    use axum::http::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    headers.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
}

fn is_problem(response: &Response<Body>) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes())
}

fn render_problem(
    mut problem: Problem,
    request_id: &str,
    trace_id: &TraceId,
    original: Response<Body>,
) -> Response<Body> {
    problem.request_id = request_id.to_string();
    problem.trace_id = Some(trace_id.to_string());
    let (mut parts, _) = original.into_parts();
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The gate, then the router. A route that is not `Access::Open` needs: a
/// place under `server.max_in_flight` (else `503 OVERLOADED` at once); the
/// per-IP limit, so a flood never reaches the token verifier; then
/// authentication; then the per-principal limits; then, for admin routes,
/// the admin role. An unmatched path goes straight to the router (a 404).
///
/// A safe request (GET, HEAD) of an authenticated principal, when the
/// limiter waits on Redis, runs its handler alongside the limiter's check
/// rather than after it: its reads change nothing, so a refused request's
/// answer is the same 429, and an admitted one waits for one Redis round
/// trip instead of two (both commands leave in one write). The cost: a
/// refused read has made its read too. Not where a concurrency policy
/// applies: its slot is taken before any of the request's work starts.
async fn gated(
    state: &AppState,
    found: Option<RouteInfo>,
    mut req: Request,
    router: &Router,
) -> Response<Body> {
    let Some(found) = found.filter(|r| r.access != Access::Open) else {
        return route(router, req).await;
    };
    // Held until the response is produced (or the request is dropped).
    let Some(_serving) = state.in_flight.try_enter() else {
        state.events.request_shed();
        return super::problem::ApiError::Overloaded.into_response();
    };
    if let Some(limit) = &state.per_ip
        && let Some(refused) = per_ip(state, limit, &req)
    {
        return refused;
    }
    let method = method_label(req.method());
    let principal = match authenticate(state, req.headers()).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    let alongside = found.access == Access::Authenticated
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && state.limiter.is_remote()
        && !state.limiter.caps_in_flight(method, found.template);
    let (admitted, mut response) = if alongside {
        // The handler's `Caller`.
        req.extensions_mut().insert(principal.clone());
        match first_admitted(limit(state, found, method, &principal), route(router, req)).await {
            Ok(both) => both,
            Err(refused) => return refused,
        }
    } else {
        let admitted = match limit(state, found, method, &principal).await {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        req.extensions_mut().insert(principal);
        (admitted, route(router, req).await)
    };
    // In-flight slots are held until the response is produced (or the
    // request is dropped).
    drop(admitted.guard);
    with_rate_limit_headers(&mut response, admitted.headers);
    response
}

/// Run `handler` alongside `check`: the handler's response once the check
/// admits; the check's refusal (the handler dropped, wherever it got to)
/// if it refuses. A handler that panics does so only once the check has
/// admitted, as if it had run after it.
async fn first_admitted(
    check: impl Future<Output = Result<Admitted, Response<Body>>>,
    handler: impl Future<Output = Response<Body>>,
) -> Result<(Admitted, Response<Body>), Response<Body>> {
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::task::Poll;
    let (mut check, mut handler) = (std::pin::pin!(check), std::pin::pin!(handler));
    let mut answered = None;
    let admitted = std::future::poll_fn(|cx| {
        if answered.is_none() {
            match catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx))) {
                Ok(Poll::Ready(response)) => answered = Some(Ok(response)),
                Ok(Poll::Pending) => {}
                Err(panic) => answered = Some(Err(panic)),
            }
        }
        check.as_mut().poll(cx)
    })
    .await?;
    let response = match answered {
        Some(Ok(response)) => response,
        Some(Err(panic)) => resume_unwind(panic),
        None => handler.await,
    };
    Ok((admitted, response))
}

fn with_rate_limit_headers(
    response: &mut Response<Body>,
    headers: Option<crate::ratelimit::headers::RateLimitHeaders>,
) {
    for (name, value) in headers.and_then(super::problem::rate_limit_headers).into_iter().flatten() {
        response.headers_mut().append(name, value);
    }
}

/// A request the gate let through: the rate-limit headers for its
/// response, its in-flight slots.
struct Admitted {
    headers: Option<crate::ratelimit::headers::RateLimitHeaders>,
    guard: Option<crate::ratelimit::ConcurrencyGuard>,
}

/// Who is calling, or the refusal. Takes the headers, not the request: its
/// future holds no copy of the request.
async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, Response<Body>> {
    let outcome = state
        .auth
        .authenticate(
            headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes),
            headers.get(&API_KEY).map(HeaderValue::as_bytes),
        )
        .await;
    match outcome {
        Ok(principal) => {
            // For the access log (the request context is the envelope's).
            RequestContext::with_current(|c| c.map(|c| c.principal.set(principal.kind_str())));
            Ok(principal)
        }
        Err(failure) => {
            state.events.auth_failure(failure.reason());
            Err(super::problem::ApiError::Unauthenticated(failure).into_response())
        }
    }
}

/// The per-principal limits (every policy that applies to this route in one
/// step), then the admin role on admin routes (a 403, after the limits).
/// `Err` is the refusal.
async fn limit(
    state: &AppState,
    found: RouteInfo,
    method: &'static str,
    principal: &Principal,
) -> Result<Admitted, Response<Body>> {
    use crate::ratelimit::Decision;
    let span =
        tracing::info_span!("ratelimit.check", otel.kind = "internal", ratelimit.decision = field::Empty);
    let decision = state.limiter.check(principal, method, found.template).instrument(span.clone()).await;
    span.record(
        "ratelimit.decision",
        match &decision {
            Decision::Admitted { .. } => "admitted",
            Decision::Limited { .. } => "limited",
            Decision::StoreUnavailable => "store_unavailable",
        },
    );
    drop(span);
    match decision {
        Decision::Admitted { headers, .. } if found.access == Access::Admin && !principal.is_admin => {
            state.events.auth_failure(crate::auth::AuthFailure::Forbidden.reason());
            let mut refused = super::problem::ApiError::Forbidden.into_response();
            with_rate_limit_headers(&mut refused, headers);
            Err(refused)
        }
        Decision::Admitted { headers, guard } => Ok(Admitted { headers, guard }),
        Decision::Limited { headers, retry_after_secs, violated } => {
            Err(super::problem::ApiError::RateLimited { retry_after_secs, violated, headers: Some(headers) }
                .into_response())
        }
        Decision::StoreUnavailable => {
            Err(super::problem::ApiError::RateLimitStoreUnavailable.into_response())
        }
    }
}

/// The per-IP GCRA (governor's keyed limiter, with tower-governor's
/// configuration): `Some` is the refusal.
fn per_ip(state: &AppState, per_ip: &super::PerIp, req: &Request) -> Option<Response<Body>> {
    use governor::clock::Clock;
    use tower_governor::key_extractor::KeyExtractor;
    let key = match per_ip.client_ip.extract(req) {
        Ok(key) => key,
        Err(e) => {
            return Some(
                super::problem::ApiError::Internal(anyhow::anyhow!("per-IP limiter: {e}")).into_response(),
            );
        }
    };
    let limiter = per_ip.config.limiter();
    let refused = limiter.check_key(&key).err()?;
    state.events.per_ip_limited();
    let wait = refused.wait_time_from(limiter.clock().now());
    Some(
        super::problem::ApiError::RateLimited {
            // Whole seconds, rounded down by `as_secs`: one more is never early.
            retry_after_secs: wait.as_secs() + 1,
            violated: vec![Arc::from(crate::telemetry::catalog::values::PER_IP_POLICY)],
            headers: None,
        }
        .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use std::time::Duration;

    #[test]
    fn a_timeout_too_long_for_an_instant_is_far_off_not_a_panic() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert!(deadline(now, Duration::MAX) > now + Duration::from_secs(365 * 86_400));
    }

    #[tokio::test]
    async fn alongside_the_check_a_refusal_wins_and_a_handler_panic_waits_for_admission() {
        let admitted = || async { Ok::<_, Response<Body>>(Admitted { headers: None, guard: None }) };
        let refused = || async {
            tokio::task::yield_now().await;
            Err::<Admitted, _>(StatusCode::TOO_MANY_REQUESTS.into_response())
        };
        let ok = || async { StatusCode::OK.into_response() };
        let panics = || async {
            if true {
                panic!("handler bug");
            }
            StatusCode::OK.into_response()
        };
        let (_, r) = first_admitted(admitted(), ok()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let status = |r: Result<(Admitted, Response<Body>), Response<Body>>| r.err().map(|r| r.status());
        assert_eq!(status(first_admitted(refused(), ok()).await), Some(StatusCode::TOO_MANY_REQUESTS));
        // A handler that panics before a refusal arrives: the refusal, as if it had not run.
        assert_eq!(status(first_admitted(refused(), panics()).await), Some(StatusCode::TOO_MANY_REQUESTS));
        // Admitted: the panic goes on, to `guarded`'s 500.
        let outcome =
            tokio::spawn(async move { first_admitted(admitted(), panics()).await.map(|_| ()) }).await;
        assert!(outcome.unwrap_err().is_panic());
    }

    #[tokio::test]
    async fn guarded_passes_an_answer_through() {
        let ok =
            guarded(async { StatusCode::CREATED.into_response() }, Instant::now() + Duration::from_secs(1))
                .await;
        assert_eq!(ok.status(), StatusCode::CREATED);
    }

    #[tokio::test]
    async fn guarded_turns_a_panic_into_a_500_with_its_message_for_the_log() {
        let answer = guarded(
            async {
                if std::hint::black_box(true) {
                    panic!("boom {}", 42);
                }
                StatusCode::OK.into_response()
            },
            Instant::now() + Duration::from_secs(1),
        )
        .await;
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let fault = answer.extensions().get::<ServerFault>().expect("the cause, for the log line");
        assert!(fault.0.contains("handler panicked: boom 42"), "{}", fault.0);
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_answers_408_past_the_timeout_and_drops_the_handler() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let slow = async move {
            let _held = tx;
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        };
        let answer = guarded(slow, Instant::now() + Duration::from_millis(100)).await;
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(rx.await.is_err(), "the handler's future was dropped");
    }
}
