//! The JSON shapes of the API, with their OpenAPI schemas.
//!
//! Kept apart from the domain types so the wire format is explicit and only
//! changes on purpose.

use crate::clock::{Rfc3339, rfc3339_ms};
use crate::json::push_literal_bytes;
use crate::sessions::{QueryResult, Session, SessionId, ToolSet};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// UUIDv7.
    #[schema(format = Uuid)]
    pub id: String,
    pub user_id: String,
    pub tool_set: String,
    /// RFC 3339 UTC, millisecond precision.
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_active_at: String,
    /// `min(last_active_at + idle_ttl, created_at + max_lifetime)`.
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(minimum = 0)]
    pub conversation_turns: u32,
    #[schema(minimum = 0)]
    pub migrations: u32,
    /// On a create that ended another session to make room: the session ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub evicted_session_id: Option<String>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.as_hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_string(),
            user_id: s.user_id.to_string(),
            tool_set: s.tool_set.to_string(),
            created_at: rfc3339_ms(s.created_at),
            last_active_at: rfc3339_ms(s.last_active_at),
            expires_at: rfc3339_ms(s.expires_at),
            conversation_turns: s.conversation_turns,
            migrations: s.migrations,
            evicted_session_id: None,
        }
    }
}

/// A `SessionView` response body, written straight from the session: every
/// session route answers with one, and serde's field-by-field machinery (six
/// strings built, then escaped byte by byte) cost more than the request's
/// rate limiting. Bytes, not a `String`: nothing pushed is checked for
/// UTF-8 again. The bytes are exactly serde_json's for the `SessionView`
/// (a test holds them to it), so the OpenAPI schema above stays true.
pub struct SessionJson(Vec<u8>);

impl SessionJson {
    pub fn new(s: &Session, evicted_session_id: Option<SessionId>) -> Self {
        let mut uuid = uuid::Uuid::encode_buffer();
        let mut out = Vec::with_capacity(256 + s.user_id.len() + s.tool_set.len());
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(s.id.as_hyphenated().encode_lower(&mut uuid).as_bytes());
        out.extend_from_slice(b"\",\"user_id\":");
        push_literal_bytes(&mut out, &s.user_id);
        out.extend_from_slice(b",\"tool_set\":");
        push_literal_bytes(&mut out, &s.tool_set);
        for (key, at) in [
            (&b",\"created_at\":\""[..], s.created_at),
            (b",\"last_active_at\":\"", s.last_active_at),
            (b",\"expires_at\":\"", s.expires_at),
        ] {
            out.extend_from_slice(key);
            out.extend_from_slice(Rfc3339::millis(at).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b",\"conversation_turns\":");
        out.extend_from_slice(itoa::Buffer::new().format(s.conversation_turns).as_bytes());
        out.extend_from_slice(b",\"migrations\":");
        out.extend_from_slice(itoa::Buffer::new().format(s.migrations).as_bytes());
        if let Some(id) = evicted_session_id {
            out.extend_from_slice(b",\"evicted_session_id\":\"");
            out.extend_from_slice(id.as_hyphenated().encode_lower(&mut uuid).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
        Self(out)
    }
}

impl From<&Session> for SessionJson {
    fn from(s: &Session) -> Self {
        Self::new(s, None)
    }
}

impl IntoResponse for SessionJson {
    /// With room for the headers the middleware adds on the way out (two
    /// `RateLimit` headers, the request id, four security headers, the length):
    /// a map that fills up is regrown and rehashed (as last measured:
    /// `docs/performance.md#hand-written-fast-paths--ledger`).
    fn into_response(self) -> Response {
        let mut response = Response::new(axum::body::Body::from(self.0));
        let headers = response.headers_mut();
        *headers = axum::http::HeaderMap::with_capacity(12);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

impl SessionList {
    pub fn of(sessions: &[Session]) -> Self {
        Self { sessions: sessions.iter().map(SessionView::from).collect() }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The name of a configured tool set (see `GET /v1/tool-sets`).
    pub tool_set: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateSessionRequest {
    /// The tool set to switch to; the conversation starts over, the id stays.
    pub tool_set: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The user's input; must not be blank.
    pub input: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResponse {
    #[schema(format = Uuid)]
    pub session_id: String,
    /// This query's turn number in the conversation (1 after a create or migration).
    pub turn: u32,
    pub tool_set: String,
    pub output: String,
    pub duration_ms: u64,
}

impl From<QueryResult> for QueryResponse {
    fn from(q: QueryResult) -> Self {
        Self {
            session_id: q.session_id.to_string(),
            turn: q.turn,
            tool_set: q.tool_set.to_string(),
            output: q.output,
            duration_ms: q.duration_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolSetView {
    pub name: String,
    pub description: String,
    pub tools: Vec<String>,
}

impl From<&ToolSet> for ToolSetView {
    fn from(t: &ToolSet) -> Self {
        Self { name: t.name.to_string(), description: t.description.clone(), tools: t.tools.to_vec() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolSetList {
    pub tool_sets: Vec<ToolSetView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminSessionsQuery {
    /// The user whose live sessions to list.
    pub user: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResponse {
    pub user: String,
    /// The sessions that were ended.
    pub revoked_session_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: String,
    /// Readiness only: `up` while the session store answers, else `down`.
    /// A shared store's outage does not fail readiness: every replica shares
    /// it, and failing would take them all out of the load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreHealth>,
    /// Readiness only, while the store is down: why, as its operator needs it
    /// (the unreachable node, the slots no node serves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreHealth {
    Up,
    Down,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        /// The hand-written body is byte for byte serde_json's `SessionView`,
        /// for any strings (escapes included) and any instants (clamping included).
        #[test]
        fn session_json_is_serde_jsons_session_view(
            user in any::<String>(),
            tool_set in "[a-z_\\-\"\\\\\\n\\u{0}-\\u{1f}é✓]{0,12}",
            times in proptest::array::uniform3(any::<i64>()),
            turns in any::<u32>(),
            migrations in any::<u32>(),
            ids in proptest::array::uniform2(any::<u128>()),
            evicted in any::<bool>(),
        ) {
            let s = Session {
                id: uuid::Uuid::from_u128(ids[0]),
                user_id: Arc::from(user),
                tool_set: Arc::from(tool_set),
                created_at: times[0],
                last_active_at: times[1] % 300_000_000_000_000,
                expires_at: times[2] % 2_000_000_000_000,
                conversation_turns: turns,
                migrations,
            };
            let evicted = evicted.then(|| uuid::Uuid::from_u128(ids[1]));
            let mut view = SessionView::from(&s);
            view.evicted_session_id = evicted.map(|id| id.to_string());
            prop_assert_eq!(SessionJson::new(&s, evicted).0, serde_json::to_string(&view).unwrap().into_bytes());
        }
    }
}
