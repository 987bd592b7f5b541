//! Extractors that fail with our problem shape instead of axum's plain text.

use super::problem::ApiError;
use crate::auth::Principal;
use crate::sessions::SessionId;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `axum::Json`, with bad bodies answered as problem+json: broken JSON is a
/// 400, JSON of the wrong shape a 422 naming what is wrong, too big a 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field ("missing field `tool_set`").
            let msg = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.body_text());
            ApiError::field("body", msg)
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::Malformed("the request body is not valid JSON".into()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::Malformed(other.body_text()),
    }
}

/// A session id from the path; anything but a UUID is a 400.
pub struct SessionIdPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<SessionId>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(SessionIdPath(id)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::Malformed("the session id must be a UUID".into()))
            }
            Err(e) => Err(ApiError::Malformed(e.body_text())),
        }
    }
}

/// Query-string parameters, with bad ones answered as a 422.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::field("query", e.body_text()))
    }
}

/// The authenticated caller, put in place by the gate. Taken, not cloned:
/// nothing after the handler reads it, and a clone is two reference counts
/// that every request of the same principal shares.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .remove::<Principal>()
            .map(Caller)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("route reached without authentication")))
    }
}
