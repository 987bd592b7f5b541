//! The session as the domain sees it, and the limits that govern it.
//!
//! Plain data: no I/O, no HTTP shapes, no storage layout.

use crate::clock::Millis;
use crate::config::{OnLimit, SessionsConfig};
use std::sync::Arc;
use uuid::Uuid;

pub type SessionId = Uuid;

/// One agent session. `user_id` and `tool_set` are shared strings: many
/// sessions point at the same few values, so they cost a pointer each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: Arc<str>,
    pub tool_set: Arc<str>,
    pub created_at: Millis,
    pub last_active_at: Millis,
    pub expires_at: Millis,
    pub conversation_turns: u32,
    pub migrations: u32,
}

impl Session {
    pub fn is_live(&self, now: Millis) -> bool {
        is_live(self.expires_at, now)
    }
}

/// A session is live strictly before its expiry instant. (Here, with the
/// record, so that the model needs nothing of `lifecycle`, which builds on it.)
pub fn is_live(expires_at: Millis, now: Millis) -> bool {
    expires_at > now
}

/// Why a session ended. Every end is counted under exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    Deleted,
    Expired,
    Evicted,
    Revoked,
}

impl EndReason {
    pub const ALL: [EndReason; 4] =
        [EndReason::Deleted, EndReason::Expired, EndReason::Evicted, EndReason::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Expired => "expired",
            EndReason::Evicted => "evicted",
            EndReason::Revoked => "revoked",
        }
    }
}

/// The runtime-adjustable lifecycle limits, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_per_user: u32,
    pub idle_ttl_ms: Millis,
    pub max_lifetime_ms: Millis,
    pub on_limit: OnLimit,
    pub idempotency_ttl_ms: Millis,
    /// Unexpired idempotency keys one user may hold; a create with a new key
    /// beyond it is refused (a replay of a held key is not).
    pub max_idempotency_keys: u32,
}

impl From<&SessionsConfig> for Limits {
    fn from(c: &SessionsConfig) -> Self {
        Self {
            max_per_user: c.max_per_user,
            idle_ttl_ms: c.idle_ttl.as_millis() as Millis,
            max_lifetime_ms: c.max_lifetime.as_millis() as Millis,
            on_limit: c.on_limit,
            idempotency_ttl_ms: c.idempotency_ttl.as_millis() as Millis,
            max_idempotency_keys: c.max_idempotency_keys_per_user,
        }
    }
}
