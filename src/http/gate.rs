//! The gate: what a request must get through before its handler runs, for
//! every route that is not `Access::Open` — a place under
//! `server.max_in_flight`, the per-IP limit, authentication, the
//! per-principal limits, the admin role — and the rate-limit headers it
//! puts on the answer.
//!
//! Called by the envelope (`super::envelope`), inside the CORS stack when
//! CORS is on, so every refusal here carries the CORS headers. Knows nothing
//! of what handlers do, nor of how answers are rendered or logged.

use super::AppState;
use super::envelope::{API_KEY, method_label, route};
use super::routes::{Access, RouteInfo};
use crate::auth::Principal;
use crate::telemetry::RequestContext;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, Response, header};
use axum::response::IntoResponse;
use std::future::Future;
use std::sync::Arc;
use tracing::{Instrument, field};

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
pub(super) async fn gated(
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
}
