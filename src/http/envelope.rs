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
//! The gate (`super::gate`) guards every route that is not `Access::Open`:
//! the in-flight bound, the per-IP limit, authentication, the per-principal
//! limits, the admin role.
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
use super::routes::{RouteInfo, Routes};
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
                    async move { Ok::<_, Infallible>(super::gate::gated(&state, found, req, &router).await) }
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
pub(super) fn route(router: &Router, req: Request) -> impl Future<Output = Response<Body>> + use<> {
    use futures::FutureExt;
    tower::Service::call(&mut router.clone(), req).map(|answer| match answer {
        Ok(response) => response,
        Err(never) => match never {},
    })
}

// Statics, not `&str`s: a lookup by a string parses the name every time.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) static API_KEY: HeaderName = HeaderName::from_static("x-api-key");

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
pub(super) fn method_label(m: &Method) -> &'static str {
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
            guarded(Box::pin(super::gate::gated(state, found, req, router)), deadline)
                .instrument(span.clone())
                .await
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
