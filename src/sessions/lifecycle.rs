//! The lifecycle rules, as pure functions of data and a time.
//!
//! Every backend applies these same rules (the Redis backend mirrors them in its
//! Lua script and is held to them by the shared behavioural suite). They know
//! nothing of locks, maps, HTTP or Redis.

use super::model::{Limits, Session, SessionId};
use crate::clock::Millis;
use crate::config::OnLimit;

/// `min(last_active_at + idle_ttl, created_at + max_lifetime)`.
pub fn expires_at(created_at: Millis, last_active_at: Millis, limits: &Limits) -> Millis {
    (last_active_at.saturating_add(limits.idle_ttl_ms)).min(created_at.saturating_add(limits.max_lifetime_ms))
}

/// How far a store's time may run ahead of a caller's clock and still be
/// taken as reordering (changes arriving in another order than their callers
/// read their clocks). A store time further ahead is a wrong clock (stepped
/// back by NTP, a replica's running fast): the caller's own is used, and the
/// store's time is reset to it, so one bad clock cannot drag every session's
/// expiry along. The Redis scripts hold the same number (`CLOCK_SLACK`).
pub const CLOCK_SLACK_MS: Millis = 5_000;

/// The time a change runs at, given the latest time a change of the same
/// shard or group has run at: see [`CLOCK_SLACK_MS`].
pub fn change_time(latest: Millis, now: Millis) -> Millis {
    if latest.saturating_sub(now) > CLOCK_SLACK_MS { now } else { latest.max(now) }
}

pub use super::model::is_live;

/// What a create must do given the user's sessions at the moment of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Room left under the cap.
    Admit,
    /// At the cap with `evict_oldest`: end these (least recently active first),
    /// then create. Usually one; more only when the cap was lowered at runtime.
    Evict(Vec<SessionId>),
    /// At the cap with `reject`: the soonest expiry frees a slot in `retry_after_ms`.
    Reject { retry_after_ms: Millis, live: Vec<SessionId> },
}

/// The eviction order: least recently active first; ties by creation, then id,
/// so the choice is deterministic across backends.
pub fn eviction_order(a: &Session, b: &Session) -> std::cmp::Ordering {
    (a.last_active_at, a.created_at, a.id).cmp(&(b.last_active_at, b.created_at, b.id))
}

/// Decide a create. Expired sessions in `sessions` are ignored here, whatever
/// the reaper has done: only sessions live at `now` count against the cap.
pub fn admit<'a>(sessions: impl IntoIterator<Item = &'a Session>, limits: &Limits, now: Millis) -> Admission {
    let mut live: Vec<&Session> = sessions.into_iter().filter(|s| s.is_live(now)).collect();
    let cap = limits.max_per_user as usize;
    if live.len() < cap {
        return Admission::Admit;
    }
    match limits.on_limit {
        OnLimit::EvictOldest => {
            live.sort_by(|a, b| eviction_order(a, b));
            let excess = live.len() + 1 - cap;
            Admission::Evict(live.iter().take(excess).map(|s| s.id).collect())
        }
        OnLimit::Reject => {
            // Room comes when `live - cap + 1` of them have expired: usually
            // the soonest, more when the cap was lowered below what is held.
            let mut expiries: Vec<Millis> = live.iter().map(|s| s.expires_at).collect();
            let room = *expiries.select_nth_unstable(live.len() - cap).1;
            live.sort_by_key(|s| (s.created_at, s.id));
            Admission::Reject {
                retry_after_ms: (room - now).max(0),
                live: live.iter().map(|s| s.id).collect(),
            }
        }
    }
}

/// Whole seconds a client must wait, rounded up and at least one, so that a
/// client that waits exactly this long is never early.
pub fn retry_after_secs(ms: Millis) -> u64 {
    (ms.max(1) as u64).div_ceil(1000)
}

/// Activity cannot extend a live session whose lifetime is over at `now`
/// under limits lowered since it was created (its stored expiry is from the
/// old ones): it expires at the end of that lifetime, returned here.
pub fn outlived(created_at: Millis, now: Millis, limits: &Limits) -> Option<Millis> {
    let end = created_at.saturating_add(limits.max_lifetime_ms);
    (end <= now).then_some(end)
}

/// The new state of a session after activity at `now`.
pub fn touch(session: &mut Session, now: Millis, limits: &Limits) {
    session.last_active_at = session.last_active_at.max(now);
    session.expires_at = expires_at(session.created_at, session.last_active_at, limits);
}

/// Migration: a new tool set, the conversation starts over, the slot is kept.
/// Migrating to the tool set a session already has is only activity.
pub fn migrate(session: &mut Session, tool_set: std::sync::Arc<str>, now: Millis, limits: &Limits) {
    if session.tool_set != tool_set {
        session.tool_set = tool_set;
        session.conversation_turns = 0;
        session.migrations += 1;
    }
    touch(session, now, limits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use uuid::Uuid;

    fn limits(cap: u32, on_limit: OnLimit) -> Limits {
        Limits {
            max_per_user: cap,
            idle_ttl_ms: 1_000,
            max_lifetime_ms: 10_000,
            on_limit,
            idempotency_ttl_ms: 60_000,
            max_idempotency_keys: 100,
        }
    }

    fn session(n: u128, created: Millis, active: Millis, l: &Limits) -> Session {
        Session {
            id: Uuid::from_u128(n),
            user_id: Arc::from("u"),
            tool_set: Arc::from("t"),
            created_at: created,
            last_active_at: active,
            expires_at: expires_at(created, active, l),
            conversation_turns: 0,
            migrations: 0,
        }
    }

    #[test]
    fn expiry_is_the_sooner_of_idle_and_lifetime() {
        let l = limits(1, OnLimit::Reject);
        assert_eq!(expires_at(0, 0, &l), 1_000);
        assert_eq!(expires_at(0, 9_500, &l), 10_000);
    }

    #[test]
    fn expired_sessions_never_count() {
        let l = limits(1, OnLimit::Reject);
        let s = session(1, 0, 0, &l);
        assert_eq!(admit([&s], &l, 1_000), Admission::Admit);
        assert!(matches!(admit([&s], &l, 999), Admission::Reject { retry_after_ms: 1, .. }));
    }

    #[test]
    fn evicts_least_recently_active_not_oldest() {
        let l = limits(2, OnLimit::EvictOldest);
        let old_but_busy = session(1, 0, 900, &l);
        let new_but_idle = session(2, 100, 100, &l);
        assert_eq!(
            admit([&old_but_busy, &new_but_idle], &l, 950),
            Admission::Evict(vec![Uuid::from_u128(2)])
        );
    }

    #[test]
    fn a_lowered_cap_evicts_down_to_it() {
        let l = limits(1, OnLimit::EvictOldest);
        let a = session(1, 0, 10, &l);
        let b = session(2, 0, 20, &l);
        let c = session(3, 0, 30, &l);
        assert_eq!(
            admit([&c, &a, &b], &l, 40),
            Admission::Evict(vec![Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)])
        );
    }

    #[test]
    fn over_a_lowered_cap_reject_waits_for_enough_expiries() {
        let l = limits(3, OnLimit::Reject);
        let (a, b, c) = (session(1, 0, 0, &l), session(2, 0, 200, &l), session(3, 0, 100, &l));
        let wait = |cap| match admit([&a, &b, &c], &limits(cap, OnLimit::Reject), 300) {
            Admission::Reject { retry_after_ms, .. } => retry_after_ms,
            other => panic!("{other:?}"),
        };
        // Expiries 1000, 1100, 1200: one must go at cap 3, two at 2, all three at 1.
        assert_eq!((wait(3), wait(2), wait(1)), (700, 800, 900));
    }

    #[test]
    fn a_lifetime_cut_short_ends_at_the_next_activity() {
        let l = limits(1, OnLimit::Reject);
        assert_eq!(outlived(0, 9_999, &l), None);
        assert_eq!(outlived(0, 10_000, &l), Some(10_000));
        assert_eq!(outlived(i64::MAX - 1, i64::MAX - 1, &l), None, "no overflow");
    }

    #[test]
    fn retry_after_is_never_early() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1000), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }

    #[test]
    fn migration_resets_the_conversation_and_keeps_the_id() {
        let l = limits(1, OnLimit::Reject);
        let mut s = session(1, 0, 0, &l);
        s.conversation_turns = 3;
        migrate(&mut s, Arc::from("other"), 500, &l);
        assert_eq!((s.conversation_turns, s.migrations, s.last_active_at), (0, 1, 500));
        assert_eq!(s.expires_at, 1_500);
        migrate(&mut s, Arc::from("other"), 600, &l);
        assert_eq!(s.migrations, 1, "same tool set is not a migration");
    }
}
