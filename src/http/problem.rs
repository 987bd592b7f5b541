//! One error type, one response shape: RFC 9457 `application/problem+json`.
//!
//! Handlers return `ApiError`; it becomes a response carrying a
//! `PendingProblem`, and the request envelope (which knows the request id)
//! renders the body. Error responses made elsewhere (a 405 from the router, a
//! 408 from the envelope's timeout) are rewritten into the same shape there too, so
//! no client ever sees another error format. 5xx causes are logged once by the
//! envelope and never sent to the client.

use crate::auth::AuthFailure;
use crate::ratelimit::headers::RateLimitHeaders;
use crate::sessions::{ServiceError, SessionId, StoreError, lifecycle};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `RateLimit-Policy` and `RateLimit`, on admitted and refused responses alike.
pub fn rate_limit_headers(rl: RateLimitHeaders) -> Option<[(HeaderName, HeaderValue); 2]> {
    // From the `String`s themselves: no copy.
    let (Ok(p), Ok(l)) = (HeaderValue::try_from(rl.policy), HeaderValue::try_from(rl.limit)) else {
        return None;
    };
    Some([(HeaderName::from_static("ratelimit-policy"), p), (HeaderName::from_static("ratelimit"), l)])
}

/// The body of every error response. Its OpenAPI schema is written out
/// below (`PartialSchema`), since `extensions` holds members that only some
/// codes carry and the document types each of them.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the problem type; stable per `code`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable error code, e.g. `NOT_FOUND`.
    pub code: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// How the client can recover, where there is a way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// Problem-specific members (`errors`, `valid_tool_sets`, `live_session_ids`, …).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

/// The codes, each written once: the enum, `ALL` and `as_str` are made
/// from this one list.
macro_rules! problem_codes {
    ($($code:ident => $text:literal,)*) => {
        /// Every `code` a problem may carry: the document's enum, so generated
        /// clients can switch on it. `Problem::new` refuses (in debug builds, so in
        /// every test) a code missing here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ProblemCode {
            $($code,)*
        }

        impl ProblemCode {
            pub const ALL: &[ProblemCode] = &[$(ProblemCode::$code,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProblemCode::$code => $text,)*
                }
            }
        }
    };
}

problem_codes! {
    Unauthenticated => "UNAUTHENTICATED",
    Forbidden => "FORBIDDEN",
    NotFound => "NOT_FOUND",
    MethodNotAllowed => "METHOD_NOT_ALLOWED",
    MalformedRequest => "MALFORMED_REQUEST",
    RequestTimeout => "REQUEST_TIMEOUT",
    ValidationFailed => "VALIDATION_FAILED",
    UnknownToolSet => "UNKNOWN_TOOL_SET",
    PayloadTooLarge => "PAYLOAD_TOO_LARGE",
    IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
    MaxSessionsExceeded => "MAX_SESSIONS_EXCEEDED",
    IdempotencyKeysExceeded => "IDEMPOTENCY_KEYS_EXCEEDED",
    RateLimited => "RATE_LIMITED",
    StoreUnavailable => "STORE_UNAVAILABLE",
    Overloaded => "OVERLOADED",
    Draining => "DRAINING",
    UpstreamError => "UPSTREAM_ERROR",
    UpstreamTimeout => "UPSTREAM_TIMEOUT",
    Internal => "INTERNAL",
}

impl ProblemCode {
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl utoipa::PartialSchema for Problem {
    /// The members every problem has, then each code's own, typed. Open to
    /// more members (`additionalProperties` is not closed): a client built
    /// today keeps working when a code gains one. The auth failure `reason`
    /// is a string, not an enum: new token checks add reasons.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let schema = json!({
            "type": "object",
            "description": "RFC 9457 problem details. Every error answer has this body \
                            (`Content-Type: application/problem+json`).",
            "required": ["type", "title", "status", "detail", "code", "request_id"],
            "properties": {
                "type": {"type": "string", "description": "A URI naming the problem type; stable per `code`."},
                "title": {"type": "string", "description": "The HTTP status's reason phrase."},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string", "description": "What went wrong, for a person."},
                "code": {"$ref": "#/components/schemas/ProblemCode"},
                "request_id": {"type": "string", "description": "The `X-Request-Id` of this exchange."},
                "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                    "description": "The W3C trace id of the request (the caller's `traceparent` continued)."},
                "suggestion": {"type": "string", "description": "How the client can recover, where there is a way."},
                "reason": {"type": "string",
                    "description": "`UNAUTHENTICATED`: which check failed (`missing`, `expired`, `bad_signature`, …)."},
                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"},
                    "description": "`VALIDATION_FAILED`: one entry per invalid field."},
                "valid_tool_sets": {"type": "array", "items": {"type": "string"},
                    "description": "`UNKNOWN_TOOL_SET`: the configured tool sets."},
                "live_session_ids": {"type": "array", "items": {"type": "string", "format": "uuid"},
                    "description": "`MAX_SESSIONS_EXCEEDED`: the caller's live sessions; end or switch one."},
                "violated_policies": {"type": "array", "items": {"type": "string"},
                    "description": "`RATE_LIMITED`: the rate-limit policies that refused the request."},
                "retry_after": {"type": "integer", "minimum": 0,
                    "description": "`RATE_LIMITED`, `MAX_SESSIONS_EXCEEDED`, `IDEMPOTENCY_KEYS_EXCEEDED`: \
                                    the `Retry-After` seconds."},
                "max_idempotency_keys": {"type": "integer", "minimum": 0,
                    "description": "`IDEMPOTENCY_KEYS_EXCEEDED`: the most unexpired keys a user may hold."}
            }
        });
        serde_json::from_value(schema).expect("the problem schema is a schema")
    }
}

impl utoipa::ToSchema for Problem {}

/// One invalid field of a `VALIDATION_FAILED` problem.
#[derive(Debug, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as a path into the request (`input`, `sessions.max_per_user`).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        debug_assert!(ProblemCode::parse(code).is_some(), "{code}: add it to ProblemCode");
        Self {
            type_uri: format!("urn:sessiongate:problem:{}", code.to_ascii_lowercase().replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            request_id: String::new(),
            trace_id: None,
            suggestion: None,
            extensions: Map::new(),
        }
    }

    pub fn suggest(mut self, s: impl Into<String>) -> Self {
        self.suggestion = Some(s.into());
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_string(), value);
        self
    }

    /// The problem for an error response produced outside our handlers.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::NOT_FOUND => ("NOT_FOUND", "no route matches this path"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("METHOD_NOT_ALLOWED", "this route does not accept this method")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "the request took too long to complete"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("MALFORMED_REQUEST", "the request body must be JSON (Content-Type: application/json)")
            }
            s if s.is_server_error() => ("INTERNAL", "an internal error occurred"),
            _ => ("MALFORMED_REQUEST", "the request could not be processed"),
        };
        Problem::new(status, code, detail)
    }
}

/// A problem waiting for the envelope to stamp the request id and render it.
#[derive(Debug, Clone)]
pub struct PendingProblem(pub Problem);

/// The cause of a 5xx, for the envelope's single log line; never sent.
#[derive(Debug, Clone)]
pub struct ServerFault(pub Arc<str>);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthenticated: {}", .0.reason())]
    Unauthenticated(AuthFailure),
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("draining")]
    Draining,
    /// `server.max_in_flight` requests are being served.
    #[error("overloaded")]
    Overloaded,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64, violated: Vec<Arc<str>>, headers: Option<RateLimitHeaders> },
    #[error("rate-limit store unavailable")]
    RateLimitStoreUnavailable,
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError { field: field.into(), message: message.into() }])
    }
}

fn ids(ids: &[SessionId]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        let mut fault = None;
        let problem = match self {
            ApiError::Unauthenticated(failure) => {
                let challenge = if failure == AuthFailure::Missing {
                    r#"Bearer realm="sessiongate""#.to_string()
                } else {
                    format!(
                        r#"Bearer realm="sessiongate", error="invalid_token", error_description="{}""#,
                        failure.description()
                    )
                };
                headers.push((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&challenge).expect("ASCII challenge"),
                ));
                Problem::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", failure.description())
                    .with("reason", json!(failure.reason()))
                    .suggest("Send `Authorization: Bearer <JWT>` with a valid, unexpired token.")
            }
            ApiError::Forbidden => {
                Problem::new(StatusCode::FORBIDDEN, "FORBIDDEN", AuthFailure::Forbidden.description())
            }
            ApiError::NotFound | ApiError::Service(ServiceError::NotFound) => {
                Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such session")
                    .suggest("List your live sessions with GET /v1/sessions; expired sessions are gone.")
            }
            ApiError::Malformed(detail) => Problem::new(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", detail),
            ApiError::Validation(errors) => {
                let list: Vec<Value> =
                    errors.iter().map(|e| json!({"field": e.field, "message": e.message})).collect();
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "VALIDATION_FAILED",
                    "the request is not valid",
                )
                .with("errors", Value::Array(list))
            }
            ApiError::PayloadTooLarge => Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::UnsupportedMediaType => Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ApiError::RateLimited { retry_after_secs, violated, headers: rl } => {
                headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after_secs)));
                headers.extend(rl.and_then(rate_limit_headers).into_iter().flatten());
                let names: Vec<&str> = violated.iter().map(|s| &**s).collect();
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    format!("rate limit exceeded: {}", names.join(", ")),
                )
                .with("violated_policies", json!(names))
                .with("retry_after", json!(retry_after_secs))
                .suggest(format!("Wait {retry_after_secs} s (Retry-After) before retrying; RateLimit headers show the remaining quota."))
            }
            ApiError::RateLimitStoreUnavailable => {
                fault = Some("rate-limit store unavailable and on_store_error = deny".into());
                headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORE_UNAVAILABLE",
                    "rate-limit storage is unavailable",
                )
                .suggest("Retry after the number of seconds in Retry-After.")
            }
            ApiError::Overloaded => {
                headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "OVERLOADED",
                    "this instance is serving as many requests as it accepts at once",
                )
                .suggest("Retry after the number of seconds in Retry-After.")
            }
            ApiError::Draining => {
                headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "DRAINING", "this instance is shutting down")
                    .suggest("Retry; another instance will answer.")
            }
            ApiError::Service(ServiceError::UnknownToolSet { valid }) => {
                let names: Vec<&str> = valid.iter().map(|s| &**s).collect();
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "UNKNOWN_TOOL_SET",
                    "no tool set has that name",
                )
                .with("valid_tool_sets", json!(names))
                .suggest(format!("Use one of: {}.", names.join(", ")))
            }
            ApiError::Service(ServiceError::LimitReached { retry_after_ms, live }) => {
                let secs = lifecycle::retry_after_secs(retry_after_ms);
                headers.push((header::RETRY_AFTER, HeaderValue::from(secs)));
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "MAX_SESSIONS_EXCEEDED",
                    format!("you already have {} live sessions, the most allowed", live.len()),
                )
                .with("live_session_ids", ids(&live))
                .with("retry_after", json!(secs))
                .suggest(format!(
                    "End a session you no longer need (DELETE /v1/sessions/{{id}}), switch one to another \
                     tool set with PATCH instead of creating, or retry in {secs} s when one expires."
                ))
            }
            ApiError::Service(ServiceError::IdempotencyConflict) => Problem::new(
                StatusCode::CONFLICT,
                "IDEMPOTENCY_CONFLICT",
                "this Idempotency-Key was used with a different request body",
            )
            .suggest("Use a new Idempotency-Key for a different request."),
            ApiError::Service(ServiceError::IdempotencyKeysExhausted { retry_after_ms, max }) => {
                let secs = lifecycle::retry_after_secs(retry_after_ms);
                headers.push((header::RETRY_AFTER, HeaderValue::from(secs)));
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "IDEMPOTENCY_KEYS_EXCEEDED",
                    format!("you already hold {max} unexpired Idempotency-Keys, the most allowed"),
                )
                .with("max_idempotency_keys", json!(max))
                .with("retry_after", json!(secs))
                .suggest(format!(
                    "Create without an Idempotency-Key, reuse a key only to retry the same request, \
                     or retry with a new key in {secs} s when the oldest one expires."
                ))
            }
            ApiError::Service(ServiceError::Store(e)) => {
                fault = Some(e.to_string());
                headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                match e {
                    StoreError::Unavailable(_) | StoreError::Internal(_) => Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "STORE_UNAVAILABLE",
                        "session storage is unavailable",
                    )
                    .suggest("Retry after the number of seconds in Retry-After."),
                }
            }
            ApiError::Service(ServiceError::AgentTimeout(d)) => {
                fault = Some(format!("agent timed out after {d:?}"));
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UPSTREAM_TIMEOUT",
                    format!("the agent did not answer within {} ms", d.as_millis()),
                )
                .suggest("Retry the query; the turn was counted.")
            }
            ApiError::Service(ServiceError::Agent(msg)) => {
                fault = Some(format!("agent failed: {msg}"));
                Problem::new(StatusCode::BAD_GATEWAY, "UPSTREAM_ERROR", "the agent failed to answer")
            }
            ApiError::Internal(e) => {
                fault = Some(format!("{e:#}"));
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "an internal error occurred")
            }
        };
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response =
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))]).into_response();
        response.headers_mut().extend(headers);
        response.extensions_mut().insert(PendingProblem(problem));
        if let Some(f) = fault {
            response.extensions_mut().insert(ServerFault(Arc::from(f)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_names_itself_as_serde_writes_it() {
        for &code in ProblemCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
            assert_eq!(ProblemCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ProblemCode::parse("NOT_A_CODE"), None);
    }

    #[test]
    fn the_problems_made_outside_handlers_have_listed_codes() {
        for status in 400..600 {
            let status = StatusCode::from_u16(status).unwrap();
            let problem = Problem::for_status(status);
            assert!(ProblemCode::parse(&problem.code).is_some(), "{status}: {}", problem.code);
        }
    }
}
