//! The JSON shapes of the API, with their OpenAPI schemas.
//!
//! Kept apart from the domain types so the wire format is explicit and only
//! changes on purpose.

use crate::clock::rfc3339_ms;
use crate::sessions::{QueryResult, Session, ToolSet};
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
}
