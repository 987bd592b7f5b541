//! The `SessionStore` trait: what the service needs from storage.
//!
//! Every operation is scoped by user, so ownership is enforced by the lookup
//! itself: another user's session is simply not found. Each mutating operation
//! is one atomic step in the backend (a lock in memory, a Lua script in Redis),
//! which is what makes the cap hold under concurrency. The store applies the
//! rules of `lifecycle`; it never emits metrics or logs about sessions — it
//! returns what happened and the service reports it.

use super::model::{Limits, Session, SessionId};
use crate::clock::Millis;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct IdempotencyRequest {
    pub key: String,
    /// A digest of the request body: the same key with another body is a conflict.
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub id: SessionId,
    pub user_id: Arc<str>,
    pub tool_set: Arc<str>,
    pub now: Millis,
    pub limits: Limits,
    pub idempotency: Option<IdempotencyRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created {
        session: Session,
        evicted: Vec<Session>,
    },
    /// The original response of an earlier create with the same idempotency key.
    Replayed {
        session: Session,
        evicted_ids: Vec<SessionId>,
    },
    IdempotencyConflict,
    /// A new idempotency key, but the user already holds
    /// `limits.max_idempotency_keys` unexpired ones; the oldest expires in
    /// `retry_after_ms`. Nothing was created or evicted.
    IdempotencyKeysExhausted {
        retry_after_ms: Millis,
    },
    LimitReached {
        retry_after_ms: Millis,
        live: Vec<SessionId>,
    },
}

/// The activity that moves `last_active_at`.
#[derive(Debug, Clone)]
pub enum Activity {
    Heartbeat,
    /// Counts a conversation turn; the result carries the turn number.
    Query,
    Migrate {
        tool_set: Arc<str>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub session: Session,
    /// The tool set before this activity (differs only after a migration).
    pub previous_tool_set: Arc<str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live sessions by tool set.
    pub active_by_tool_set: BTreeMap<Arc<str>, u64>,
    /// Past their expiry but not yet removed by the reaper.
    pub expired_pending: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// `memory` or `redis`, for metrics and logs.
    fn backend(&self) -> &'static str;

    /// Whether every change completes within its future's first poll (an
    /// in-process store): then dropping the caller cannot split a change
    /// from its outcome, and the service need not detach it.
    fn changes_finish_in_one_poll(&self) -> bool {
        false
    }

    /// Create under the cap, evicting or rejecting per `limits.on_limit`, and
    /// honouring the idempotency key — all in one atomic step.
    async fn create(&self, req: CreateRequest) -> Result<CreateOutcome, StoreError>;

    /// The session if it exists, belongs to `user` and is live at `now`.
    async fn get(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError>;

    /// The user's live sessions, oldest first.
    async fn list(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError>;

    /// Record activity on a live session.
    async fn touch(
        &self,
        user: &str,
        id: SessionId,
        activity: Activity,
        now: Millis,
        limits: &Limits,
    ) -> Result<Option<Touched>, StoreError>;

    /// End a live session at once; returns it.
    async fn delete(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError>;

    /// End all the user's live sessions; returns them.
    async fn revoke_user(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError>;

    /// Remove sessions whose expiry is at or before `now`, at most `max` of
    /// them; each is returned exactly once, by exactly one caller.
    async fn reap(&self, now: Millis, max: usize) -> Result<Vec<Session>, StoreError>;

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
