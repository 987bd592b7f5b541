//! The embedded, single-process `SessionStore`.
//!
//! Sessions are sharded by user: every operation names its user, so one shard
//! lock makes each user's check-and-change atomic (the cap holds under any
//! concurrency) while different users rarely contend. Each shard keeps
//!
//! - `sessions`: id → record, the only copy of session data (a `table::Table`:
//!   records in fixed-size chunks behind a hash table of slot numbers, so the
//!   table's growth steps cost bytes per bucket, not whole records);
//! - `users`: user → their session ids (the cap check reads only these) and
//!   their idempotency records;
//! - `expiry`: an ordered index of `(expires_at, id)`, so the reaper pops exactly
//!   the expired sessions from its front — work proportional to what expired;
//! - `idempotency_expiry`: the same for idempotency records, by expiry (not
//!   insertion: a TTL lowered at runtime must not queue new records behind
//!   old ones);
//! - `clock`: the latest time any change in the shard was made at. Each
//!   change runs at `max(now, clock)`: callers read their clocks before they
//!   take the lock, so their changes may arrive out of order, and a session
//!   one change has seen expire must stay expired for every later one (a
//!   heartbeat read a microsecond before its expiry, arriving after a create
//!   that no longer counted it, would otherwise revive it over the cap).
//!
//! It applies `sessions::lifecycle`; it knows nothing of HTTP or metrics.

use crate::clock::Millis;
use crate::sessions::lifecycle::{self, Admission};
use crate::sessions::model::{Limits, Session, SessionId};
use crate::sessions::{
    Activity, CreateOutcome, CreateRequest, SessionStore, StoreError, StoreStats, Touched,
};
use async_trait::async_trait;
use hashbrown::HashMap;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

mod table;

const SHARDS: usize = 32;

/// A session without its id (the id is the map key).
#[derive(Debug, Clone)]
struct Record {
    user_id: Arc<str>,
    tool_set: Arc<str>,
    created_at: Millis,
    last_active_at: Millis,
    expires_at: Millis,
    conversation_turns: u32,
    migrations: u32,
}

impl Record {
    fn to_session(&self, id: SessionId) -> Session {
        Session {
            id,
            user_id: self.user_id.clone(),
            tool_set: self.tool_set.clone(),
            created_at: self.created_at,
            last_active_at: self.last_active_at,
            expires_at: self.expires_at,
            conversation_turns: self.conversation_turns,
            migrations: self.migrations,
        }
    }

    fn from_session(s: &Session) -> Self {
        Self {
            user_id: s.user_id.clone(),
            tool_set: s.tool_set.clone(),
            created_at: s.created_at,
            last_active_at: s.last_active_at,
            expires_at: s.expires_at,
            conversation_turns: s.conversation_turns,
            migrations: s.migrations,
        }
    }
}

#[derive(Debug)]
struct IdempotencyRecord {
    fingerprint: Box<str>,
    expires_at: Millis,
    session: Session,
    evicted_ids: Vec<SessionId>,
}

#[derive(Debug, Default)]
struct UserEntry {
    sessions: Vec<SessionId>,
    /// Boxed and optional: most users never send an idempotency key.
    idempotency: Option<Box<HashMap<Box<str>, IdempotencyRecord>>>,
}

impl UserEntry {
    fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.idempotency.as_ref().is_none_or(|m| m.is_empty())
    }
}

#[derive(Default)]
struct Shard {
    sessions: table::Table<SessionId, Record>,
    users: HashMap<Arc<str>, UserEntry>,
    expiry: BTreeSet<(Millis, SessionId)>,
    idempotency_expiry: BTreeSet<(Millis, Arc<str>, Box<str>)>,
    /// Sessions present (live or awaiting the reaper) per tool set.
    by_tool_set: HashMap<Arc<str>, u64>,
    clock: Millis,
}

impl Shard {
    /// The time a change runs at: never before one already made here
    /// (within `lifecycle::CLOCK_SLACK_MS`; past it, the caller's).
    fn at(&mut self, now: Millis) -> Millis {
        self.clock = lifecycle::change_time(self.clock, now);
        self.clock
    }

    /// The time a read sees: what the changes made so far have seen.
    fn seen(&self, now: Millis) -> Millis {
        lifecycle::change_time(self.clock, now)
    }

    fn user_arc(&mut self, user: &str) -> Arc<str> {
        match self.users.get_key_value(user) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(user);
                self.users.insert(k.clone(), UserEntry::default());
                k
            }
        }
    }

    fn live(&self, user: &str, id: SessionId, now: Millis) -> Option<&Record> {
        self.sessions.get(&id).filter(|r| &*r.user_id == user && lifecycle::is_live(r.expires_at, now))
    }

    fn insert(&mut self, session: &Session) {
        self.sessions.insert(session.id, Record::from_session(session));
        self.expiry.insert((session.expires_at, session.id));
        *self.by_tool_set.entry(session.tool_set.clone()).or_default() += 1;
        if let Some(entry) = self.users.get_mut(&*session.user_id) {
            // Exact growth: most users hold a few sessions, and a first push
            // would otherwise reserve room for four (48 bytes wasted per user).
            entry.sessions.reserve_exact(1);
            entry.sessions.push(session.id);
        }
    }

    /// Remove a session from every index; returns it.
    fn remove(&mut self, id: SessionId) -> Option<Session> {
        let record = self.sessions.remove(&id)?;
        self.expiry.remove(&(record.expires_at, id));
        if let Some(n) = self.by_tool_set.get_mut(&record.tool_set) {
            *n -= 1;
            if *n == 0 {
                self.by_tool_set.remove(&record.tool_set);
            }
        }
        if let Some(entry) = self.users.get_mut(&*record.user_id) {
            entry.sessions.retain(|s| *s != id);
            if entry.is_empty() {
                self.users.remove(&*record.user_id);
            }
        }
        Some(record.to_session(id))
    }

    fn user_sessions(&self, user: &str) -> Vec<Session> {
        let Some(entry) = self.users.get(user) else {
            return Vec::new();
        };
        entry.sessions.iter().filter_map(|id| self.sessions.get(id).map(|r| r.to_session(*id))).collect()
    }

    /// If the user holds the most unexpired idempotency keys allowed, the
    /// wait until they hold fewer: until the oldest expires, or, when the
    /// bound was lowered below what they hold, until enough have. Expired
    /// records still in the map (the reaper removes them in order) are dropped
    /// here first, so only unexpired keys count.
    fn idempotency_full(&mut self, user: &str, limits: &Limits, now: Millis) -> Option<Millis> {
        let map = self.users.get_mut(user)?.idempotency.as_mut()?;
        let max = limits.max_idempotency_keys as usize;
        if map.len() < max {
            return None;
        }
        // The reaper's queue keeps its entries for dropped records; it checks
        // that a record is still the one it queued before removing it.
        map.retain(|_, r| r.expires_at > now);
        if map.len() < max {
            return None;
        }
        let mut waits: Vec<Millis> = map.values().map(|r| r.expires_at - now).collect();
        let at = waits.len() - max;
        Some(*waits.select_nth_unstable(at).1)
    }

    fn create(&mut self, mut req: CreateRequest) -> CreateOutcome {
        req.now = self.at(req.now);
        let user = self.user_arc(&req.user_id);
        if let Some(idem) = &req.idempotency {
            let found = self
                .users
                .get(&user)
                .and_then(|e| e.idempotency.as_ref())
                .and_then(|m| m.get(idem.key.as_str()).filter(|r| r.expires_at > req.now));
            if let Some(record) = found {
                return if *record.fingerprint == *idem.fingerprint {
                    CreateOutcome::Replayed {
                        session: record.session.clone(),
                        evicted_ids: record.evicted_ids.clone(),
                    }
                } else {
                    CreateOutcome::IdempotencyConflict
                };
            }
            if let Some(retry_after_ms) = self.idempotency_full(&user, &req.limits, req.now) {
                if self.users.get(&user).is_some_and(UserEntry::is_empty) {
                    self.users.remove(&user);
                }
                return CreateOutcome::IdempotencyKeysExhausted { retry_after_ms };
            }
        }
        let mine = self.user_sessions(&user);
        let mut evicted = Vec::new();
        match lifecycle::admit(&mine, &req.limits, req.now) {
            Admission::Admit => {}
            Admission::Evict(ids) => {
                evicted = ids.into_iter().filter_map(|id| self.remove(id)).collect();
            }
            Admission::Reject { retry_after_ms, live } => {
                if self.users.get(&user).is_some_and(UserEntry::is_empty) {
                    self.users.remove(&user);
                }
                return CreateOutcome::LimitReached { retry_after_ms, live };
            }
        }
        // Eviction may have dropped the user's (then empty) entry.
        let user = self.user_arc(&user);
        let session = Session {
            id: req.id,
            user_id: user.clone(),
            tool_set: req.tool_set,
            created_at: req.now,
            last_active_at: req.now,
            expires_at: lifecycle::expires_at(req.now, req.now, &req.limits),
            conversation_turns: 0,
            migrations: 0,
        };
        self.insert(&session);
        if let Some(idem) = req.idempotency {
            let expires_at = req.now + req.limits.idempotency_ttl_ms;
            let key: Box<str> = idem.key.into_boxed_str();
            let entry = self.users.entry(user.clone()).or_default();
            entry.idempotency.get_or_insert_with(Default::default).insert(
                key.clone(),
                IdempotencyRecord {
                    fingerprint: idem.fingerprint.into_boxed_str(),
                    expires_at,
                    session: session.clone(),
                    evicted_ids: evicted.iter().map(|s| s.id).collect(),
                },
            );
            self.idempotency_expiry.insert((expires_at, user, key));
        }
        CreateOutcome::Created { session, evicted }
    }

    fn touch(
        &mut self,
        user: &str,
        id: SessionId,
        activity: Activity,
        now: Millis,
        limits: &Limits,
    ) -> Option<Touched> {
        let now = self.at(now);
        let record = self.live(user, id, now)?;
        if let Some(end) = lifecycle::outlived(record.created_at, now, limits) {
            // Its lifetime, since lowered, is over: it expires (the reaper
            // ends it), and the activity is refused.
            let old_expiry = record.expires_at;
            self.sessions.get_mut(&id).expect("the session was just read").expires_at = end;
            self.expiry.remove(&(old_expiry, id));
            self.expiry.insert((end, id));
            return None;
        }
        let mut session = record.to_session(id);
        let previous_tool_set = session.tool_set.clone();
        let old_expiry = session.expires_at;
        match activity {
            Activity::Heartbeat => lifecycle::touch(&mut session, now, limits),
            Activity::Query => {
                session.conversation_turns += 1;
                lifecycle::touch(&mut session, now, limits);
            }
            Activity::Migrate { tool_set } => lifecycle::migrate(&mut session, tool_set, now, limits),
        }
        if session.tool_set != previous_tool_set {
            if let Some(n) = self.by_tool_set.get_mut(&previous_tool_set) {
                *n -= 1;
            }
            *self.by_tool_set.entry(session.tool_set.clone()).or_default() += 1;
        }
        if session.expires_at != old_expiry {
            self.expiry.remove(&(old_expiry, id));
            self.expiry.insert((session.expires_at, id));
        }
        *self.sessions.get_mut(&id).expect("the session was just read") = Record::from_session(&session);
        Some(Touched { session, previous_tool_set })
    }

    /// (No `at` here, as in Redis: what it removes is gone, so no later
    /// change can revive it.)
    fn reap(&mut self, now: Millis, max: usize, out: &mut Vec<Session>) {
        while out.len() < max {
            match self.expiry.first() {
                Some(&(at, id)) if at <= now => {
                    if let Some(s) = self.remove(id) {
                        out.push(s);
                    } else {
                        self.expiry.pop_first();
                    }
                }
                _ => break,
            }
        }
        // Expired idempotency records, soonest first (lookups check the
        // expiry themselves; this frees the memory).
        while let Some((at, _, _)) = self.idempotency_expiry.first() {
            if *at > now {
                break;
            }
            let (at, user, key) = self.idempotency_expiry.pop_first().expect("first exists");
            if let Some(entry) = self.users.get_mut(&user) {
                if let Some(map) = entry.idempotency.as_mut() {
                    if map.get(&key).is_some_and(|r| r.expires_at == at) {
                        map.remove(&key);
                    }
                    if map.is_empty() {
                        entry.idempotency = None;
                    }
                }
                if entry.is_empty() {
                    self.users.remove(&user);
                }
            }
        }
    }
}

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, user: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(user) as usize) % SHARDS]
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    /// Each operation takes one shard lock and never awaits.
    fn changes_finish_in_one_poll(&self) -> bool {
        true
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateOutcome, StoreError> {
        Ok(self.shard(&req.user_id).lock().create(req))
    }

    async fn get(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError> {
        let shard = self.shard(user).lock();
        Ok(shard.live(user, id, shard.seen(now)).map(|r| r.to_session(id)))
    }

    async fn list(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        let shard = self.shard(user).lock();
        let now = shard.seen(now);
        let mut list: Vec<Session> =
            shard.user_sessions(user).into_iter().filter(|s| s.is_live(now)).collect();
        drop(shard);
        list.sort_by_key(|s| (s.created_at, s.id));
        Ok(list)
    }

    async fn touch(
        &self,
        user: &str,
        id: SessionId,
        activity: Activity,
        now: Millis,
        limits: &Limits,
    ) -> Result<Option<Touched>, StoreError> {
        Ok(self.shard(user).lock().touch(user, id, activity, now, limits))
    }

    async fn delete(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError> {
        let mut shard = self.shard(user).lock();
        let now = shard.at(now);
        if shard.live(user, id, now).is_none() {
            return Ok(None);
        }
        Ok(shard.remove(id))
    }

    async fn revoke_user(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        let mut shard = self.shard(user).lock();
        let now = shard.at(now);
        let live: Vec<SessionId> =
            shard.user_sessions(user).into_iter().filter(|s| s.is_live(now)).map(|s| s.id).collect();
        Ok(live.into_iter().filter_map(|id| shard.remove(id)).collect())
    }

    async fn reap(&self, now: Millis, max: usize) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            if out.len() >= max {
                break;
            }
            shard.lock().reap(now, max, &mut out);
        }
        Ok(out)
    }

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError> {
        let mut stats = StoreStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (tool_set, n) in &shard.by_tool_set {
                *stats.active_by_tool_set.entry(tool_set.clone()).or_default() += n;
            }
            // Only the expired front of the index is walked.
            for &(at, id) in &shard.expiry {
                if at > now {
                    break;
                }
                stats.expired_pending += 1;
                if let Some(n) =
                    shard.sessions.get(&id).and_then(|r| stats.active_by_tool_set.get_mut(&r.tool_set))
                {
                    *n -= 1;
                }
            }
        }
        stats.active_by_tool_set.retain(|_, n| *n > 0);
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
