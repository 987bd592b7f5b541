//! Thin handlers: read the request, call the service, shape the response.
//! The `#[utoipa::path]` attributes are the OpenAPI document of each route's
//! own answers; what every gated route answers alike (401, 403, 429, 503
//! and the headers) the document adds from the route table (`openapi`).

use super::AppState;
use super::dto::*;
use super::extract::{ApiJson, ApiQuery, Caller, SessionIdPath};
use super::problem::{ApiError, Problem};
use crate::sessions::CreateInput;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// List the configured tool sets.
#[utoipa::path(get, path = "/v1/tool-sets", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = ToolSetList, description = "The configured tool sets")))]
pub async fn list_tool_sets(State(state): State<AppState>, _: Caller) -> Json<ToolSetList> {
    Json(ToolSetList { tool_sets: state.service.tool_sets().all().iter().map(ToolSetView::from).collect() })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    match key {
        Some(k) => Ok(Some(k.to_string())),
        None => Err(ApiError::Malformed("Idempotency-Key must be 1-255 visible ASCII characters".into())),
    }
}

/// Open a session bound to a tool set.
///
/// At the per-user cap, `sessions.on_limit` decides: the least recently
/// active session is ended (`evicted_session_id` names it), or the create is
/// refused with `429 MAX_SESSIONS_EXCEEDED`.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    request_body = CreateSessionRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Replays the original response for the same key and body within `idempotency_ttl`. \
                       A user holds at most `max_idempotency_keys_per_user` unexpired keys.")),
    responses(
        (status = 201, body = SessionView, description = "Created (or replayed, with `Idempotent-Replayed: true`)",
            headers(("Location" = String, description = "The session's URL, `/v1/sessions/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier create with the same Idempotency-Key"))),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the body is not JSON of this shape, or the Idempotency-Key is malformed"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "IDEMPOTENCY_CONFLICT"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "VALIDATION_FAILED or UNKNOWN_TOOL_SET"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "MAX_SESSIONS_EXCEEDED (`live_session_ids` lists the caller's sessions; not worth retrying \
                           before one ends), IDEMPOTENCY_KEYS_EXCEEDED or RATE_LIMITED")))]
pub async fn create_session(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let created = state
        .service
        .create(CreateInput { user: principal.id, tool_set: body.tool_set, idempotency_key })
        .await?;
    let body = SessionJson::new(&created.session, created.evicted_ids.first().copied());
    let location = format!("/v1/sessions/{}", created.session.id);
    let mut response = (StatusCode::CREATED, body).into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_str(&location).expect("uuid path is ASCII"));
    if created.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// List the caller's live sessions.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = SessionList, description = "The caller's live sessions, oldest first")))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<SessionList>, ApiError> {
    Ok(Json(SessionList::of(&state.service.list(&p.id).await?)))
}

/// Get one of the caller's sessions.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = SessionView, description = "The session"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the id is not a UUID"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "NOT_FOUND: no live session of the caller has this id")))]
pub async fn get_session(
    State(state): State<AppState>,
    Caller(p): Caller,
    SessionIdPath(id): SessionIdPath,
) -> Result<SessionJson, ApiError> {
    Ok(SessionJson::from(&state.service.get(&p.id, id).await?))
}

/// Switch a session to another tool set, in place.
///
/// Same id, new tool set, conversation reset; never fails for the cap.
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body = MigrateSessionRequest,
    responses((status = 200, body = SessionView, description = "Migrated in place: same id, new tool set, conversation reset"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the id is not a UUID, or the body is not JSON of this shape"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "NOT_FOUND: no live session of the caller has this id"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "VALIDATION_FAILED, or UNKNOWN_TOOL_SET (`valid_tool_sets` lists the configured ones)")))]
pub async fn migrate_session(
    State(state): State<AppState>,
    Caller(p): Caller,
    SessionIdPath(id): SessionIdPath,
    ApiJson(body): ApiJson<MigrateSessionRequest>,
) -> Result<SessionJson, ApiError> {
    Ok(SessionJson::from(&state.service.migrate(&p.id, id, &body.tool_set).await?))
}

/// Extend a session's idle expiry.
#[utoipa::path(post, path = "/v1/sessions/{id}/heartbeat", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = SessionView, description = "The session, its idle expiry extended"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the id is not a UUID"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "NOT_FOUND: no live session of the caller has this id")))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Caller(p): Caller,
    SessionIdPath(id): SessionIdPath,
) -> Result<SessionJson, ApiError> {
    Ok(SessionJson::from(&state.service.heartbeat(&p.id, id).await?))
}

/// Run a query through the agent.
#[utoipa::path(post, path = "/v1/sessions/{id}/queries", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body = QueryRequest,
    responses((status = 200, body = QueryResponse, description = "The agent's answer; the turn is counted"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the id is not a UUID, or the body is not JSON of this shape"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "NOT_FOUND: no live session of the caller has this id"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "VALIDATION_FAILED: the input is blank"),
        (status = 502, body = Problem, content_type = "application/problem+json", description = "UPSTREAM_ERROR"),
        (status = 504, body = Problem, content_type = "application/problem+json", description = "UPSTREAM_TIMEOUT")))]
pub async fn query(
    State(state): State<AppState>,
    Caller(p): Caller,
    SessionIdPath(id): SessionIdPath,
    ApiJson(body): ApiJson<QueryRequest>,
) -> Result<Json<QueryResponse>, ApiError> {
    if body.input.trim().is_empty() {
        return Err(ApiError::field("input", "must not be blank"));
    }
    Ok(Json(state.service.query(&p.id, id, body.input).await?.into()))
}

/// Close a session; its slot is free at once.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Ended; the slot is free at once"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the id is not a UUID"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "NOT_FOUND: no live session of the caller has this id (already ended or expired)")))]
pub async fn delete_session(
    State(state): State<AppState>,
    Caller(p): Caller,
    SessionIdPath(id): SessionIdPath,
) -> Result<StatusCode, ApiError> {
    state.service.delete(&p.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List any user's live sessions (admin).
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(AdminSessionsQuery),
    responses((status = 200, body = SessionList, description = "The user's live sessions, oldest first"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "VALIDATION_FAILED: `user` is empty")))]
pub async fn admin_list_sessions(
    State(state): State<AppState>,
    // Unused, but required: a route the gate somehow did not guard fails
    // closed instead of answering.
    _: Caller,
    ApiQuery(q): ApiQuery<AdminSessionsQuery>,
) -> Result<Json<SessionList>, ApiError> {
    if q.user.is_empty() {
        return Err(ApiError::field("user", "must not be empty"));
    }
    Ok(Json(SessionList::of(&state.service.list(&q.user).await?)))
}

/// End all of a user's sessions (admin).
#[utoipa::path(delete, path = "/v1/admin/users/{user}/sessions", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("user" = String, Path)),
    responses((status = 200, body = RevokeResponse, description = "The user's sessions, all ended")))]
pub async fn admin_revoke_user(
    State(state): State<AppState>,
    Caller(admin): Caller,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let ended = state.service.revoke_user(&user).await?;
    tracing::info!(event = "sessions_revoked", admin = %admin.id, user = %user, count = ended.len(), "admin revoked a user's sessions");
    Ok(Json(RevokeResponse { user, revoked_session_ids: ended.iter().map(|s| s.id.to_string()).collect() }))
}

/// Read the runtime limits (admin).
#[utoipa::path(get, path = "/v1/admin/config", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Object, description = "The runtime part of the configuration, policies keyed by name")))]
pub async fn admin_get_config(
    State(state): State<AppState>,
    // Unused, but required: see `admin_list_sessions`.
    _: Caller,
) -> Json<serde_json::Value> {
    Json(state.runtime.document().await)
}

/// Change the runtime limits (admin).
#[utoipa::path(patch, path = "/v1/admin/config", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "RFC 7396 JSON Merge Patch over the runtime document; null restores the file's value"),
    responses((status = 200, body = Object, description = "The new runtime document; in force here at once, on every replica within a second"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the body is not JSON"),
        (status = 415, body = Problem, content_type = "application/problem+json",
            description = "MALFORMED_REQUEST: the body is not JSON"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "VALIDATION_FAILED; nothing changed")))]
pub async fn admin_patch_config(
    State(state): State<AppState>,
    Caller(admin): Caller,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::live_config::PatchError;
    match state.runtime.patch(&admin.id, &patch).await {
        Ok(doc) => Ok(Json(doc)),
        Err(PatchError::Invalid(errors)) => Err(ApiError::Validation(
            errors
                .into_iter()
                .map(|e| super::problem::FieldError { field: e.path, message: e.message })
                .collect(),
        )),
        Err(PatchError::Store(e)) => Err(ApiError::Service(crate::sessions::ServiceError::Store(e))),
    }
}

/// Liveness: the process serves.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, body = Health, description = "The process serves")))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), store: None, store_error: None })
}

/// Readiness: started and not draining.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses((status = 200, body = Health, description = "Started and not draining; the body says whether the store answers"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "Draining")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Draining);
    }
    let (store, store_error) = match state.service.ready().await {
        Ok(()) => (StoreHealth::Up, None),
        Err(e) => (StoreHealth::Down, Some(e.to_string())),
    };
    Ok(Json(Health { status: "ready".into(), store: Some(store), store_error }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String,
        description = "Prometheus text exposition")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()),
    responses((status = 200, content_type = "application/json", body = Object, description = "This document")))]
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi.to_string())
}
