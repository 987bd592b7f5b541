//! The Redis `SessionStore`: many stateless replicas share it.
//!
//! Every operation is one call on one hash slot: a Lua script, or for reading
//! one session a plain `HMGET`. Users are spread over
//! `GROUPS` groups by a stable hash, and all of a group's keys carry the tag
//! `{g:<n>}`: a user's sessions, their index, their idempotency records, *and*
//! the group's expiry index and per-tool-set counts. So a create (cap check,
//! eviction, idempotency, expiry index) is one atomic step, and the reaper
//! claims expired sessions group by group, atomically, so each expiry is
//! reported exactly once across all replicas. The reaper's work per sweep is
//! one cheap call per group plus what expired. (With `{u:<user>}` tags the
//! expiry index would live in other slots and every create would need a
//! second, non-atomic call to maintain it.)
//!
//! The scripts apply the same rules as `sessions::lifecycle`, and the shared
//! behavioural suite holds them to it.

mod cluster;
mod conn;
mod pipe;

pub use conn::{Redis, RedisFailure, evalsha};

use crate::clock::Millis;
use crate::config::OnLimit;
use crate::sessions::{
    Activity, CreateOutcome, CreateRequest, Limits, Session, SessionId, SessionStore, StoreError, StoreStats,
    Touched,
};
use async_trait::async_trait;
use redis::{Script, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

/// How many slot groups users are spread over.
pub const GROUPS: u32 = 64;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("common.lua"), "\n", include_str!($file))))
    };
}

static CREATE: LazyLock<Script> = script!("create.lua");
static TOUCH: LazyLock<Script> = script!("touch.lua");
static END: LazyLock<Script> = script!("end.lua");
static READ: LazyLock<Script> = script!("read.lua");
static REAP: LazyLock<Script> = script!("reap.lua");
static STATS: LazyLock<Script> = script!("stats.lua");

pub struct RedisStore {
    redis: Arc<Redis>,
    /// The server's version was seen to be new enough (7.0: `PEXPIRE … GT`).
    version_ok: AtomicBool,
    /// The callers' times are wall-clock readings: the scripts bound them by
    /// Redis's own `TIME` (see `bounded` in common.lua). Off for a test's
    /// clock, which may be set anywhere.
    bound_wall_clocks: bool,
}

/// FNV-1a: a stable hash, the same in every replica and every release.
pub fn group_of(user: &str) -> u32 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % u64::from(GROUPS)) as u32
}

fn s(v: impl Into<String>) -> Vec<u8> {
    v.into().into_bytes()
}

fn i(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn failure(e: RedisFailure) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad("non-UTF-8 string")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(bad(&format!("expected a string, got {other:?}"))),
    }
}

fn int(v: &Value) -> Result<i64, StoreError> {
    let digits = match v {
        Value::Int(n) => return Ok(*n),
        Value::BulkString(b) => b.as_slice(),
        Value::SimpleString(s) => s.as_bytes(),
        other => return Err(bad(&format!("expected an integer, got {other:?}"))),
    };
    std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(|| bad("expected an integer"))
}

fn bad(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected reply from Redis for a session operation: {what}"))
}

fn items(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(bad(&format!("expected an array, got {other:?}"))),
    }
}

fn id(v: &Value) -> Result<SessionId, StoreError> {
    SessionId::parse_str(&text(v)?).map_err(|_| bad("not a session id"))
}

/// `{id, user, tool, created, active, expires, turns, migrations}`.
fn session(v: &Value) -> Result<Session, StoreError> {
    let [session_id, user, rest @ ..] = items(v)? else {
        return Err(bad("a session has 8 fields"));
    };
    record(id(session_id)?, Arc::from(text(user)?), rest)
}

/// A session from its id, its user and `{tool, created, active, expires,
/// turns, migrations}`: the scripts' `wire` form after its first two fields,
/// and the `HMGET` of a session hash after its first.
fn record(id: SessionId, user_id: Arc<str>, f: &[Value]) -> Result<Session, StoreError> {
    let [tool, created, active, expires, turns, migrations] = f else {
        return Err(bad("a session record has 6 fields after its id and user"));
    };
    Ok(Session {
        id,
        user_id,
        tool_set: Arc::from(text(tool)?),
        created_at: int(created)?,
        last_active_at: int(active)?,
        expires_at: int(expires)?,
        conversation_turns: int(turns)? as u32,
        migrations: int(migrations)? as u32,
    })
}

fn sessions(v: &Value) -> Result<Vec<Session>, StoreError> {
    items(v)?.iter().map(session).collect()
}

impl RedisStore {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis, version_ok: AtomicBool::new(false), bound_wall_clocks: false }
    }

    /// Whether the scripts bound each caller's time by Redis's own clock (on
    /// for replicas reading the wall clock; see `bounded` in common.lua).
    pub fn bounding_wall_clocks(mut self, on: bool) -> Self {
        self.bound_wall_clocks = on;
        self
    }

    /// `<prefix>:{g:<n>}:` for the group with this index. (Pushed piece by
    /// piece: it is made on every request, and `format!` costs several times
    /// as much.)
    fn group_prefix(&self, group: u32) -> String {
        let prefix = self.redis.prefix();
        let mut key = String::with_capacity(prefix.len() + 48);
        key.push_str(prefix);
        key.push_str(":{g:");
        key.push_str(itoa::Buffer::new().format(group));
        key.push_str("}:");
        key
    }

    /// `now` held to within the clock slack of Redis's own `TIME`, as
    /// `bounded` in common.lua does inside each change's script: for the
    /// sweeps, one call instead of one in each of their 128 scripts.
    async fn bounded(&self, now: Millis) -> Result<Millis, StoreError> {
        if !self.bound_wall_clocks {
            return Ok(now);
        }
        let (secs, micros): (i64, i64) = self.redis.cmd(&redis::cmd("TIME")).await.map_err(failure)?;
        let server = secs * 1000 + micros / 1000;
        let slack = crate::sessions::lifecycle::CLOCK_SLACK_MS;
        Ok(now.clamp(server - slack, server + slack))
    }

    fn prefix_of(&self, user: &str) -> String {
        self.group_prefix(group_of(user))
    }

    /// Run a session script in the slot of `prefix` (its `exp` key routes it).
    /// The last argument says whether the caller's time is a wall clock's,
    /// for the script to bound by Redis's own.
    async fn run(&self, script: &Script, prefix: &str, args: Vec<Vec<u8>>) -> Result<Value, StoreError> {
        self.run_bounding(script, prefix, args, self.bound_wall_clocks).await
    }

    async fn run_bounding(
        &self,
        script: &Script,
        prefix: &str,
        mut args: Vec<Vec<u8>>,
        wall: bool,
    ) -> Result<Value, StoreError> {
        args.push(if wall { b"w".to_vec() } else { Vec::new() });
        let route = format!("{prefix}exp");
        self.redis.script(script, &[&route], &args).await.map_err(failure)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateOutcome, StoreError> {
        let p = self.prefix_of(&req.user_id);
        let l = req.limits;
        let (key, fp) = req.idempotency.map(|i| (i.key, i.fingerprint)).unwrap_or_default();
        let args = vec![
            s(p.clone()),
            s(&*req.user_id),
            s(req.id.to_string()),
            s(&*req.tool_set),
            i(req.now),
            i(i64::from(l.max_per_user)),
            i(l.idle_ttl_ms),
            i(l.max_lifetime_ms),
            s(if l.on_limit == OnLimit::Reject { "reject" } else { "evict" }),
            s(key),
            s(fp),
            i(l.idempotency_ttl_ms),
            i(i64::from(l.max_idempotency_keys)),
        ];
        let reply = self.run(&CREATE, &p, args).await?;
        let parts = items(&reply)?;
        let kind = parts.first().map(text).transpose()?.unwrap_or_default();
        match kind.as_str() {
            "created" => Ok(CreateOutcome::Created {
                session: session(parts.get(1).ok_or_else(|| bad("created without a session"))?)?,
                evicted: parts[2..].iter().map(session).collect::<Result<_, _>>()?,
            }),
            "replayed" => Ok(CreateOutcome::Replayed {
                session: session(parts.get(1).ok_or_else(|| bad("replayed without a session"))?)?,
                evicted_ids: parts[2..].iter().map(id).collect::<Result<_, _>>()?,
            }),
            "conflict" => Ok(CreateOutcome::IdempotencyConflict),
            "keys_full" => Ok(CreateOutcome::IdempotencyKeysExhausted {
                retry_after_ms: int(parts.get(1).ok_or_else(|| bad("keys_full without a wait"))?)?,
            }),
            "rejected" => Ok(CreateOutcome::LimitReached {
                retry_after_ms: int(parts.get(1).ok_or_else(|| bad("rejected without a wait"))?)?,
                live: parts[2..].iter().map(id).collect::<Result<_, _>>()?,
            }),
            other => Err(bad(&format!("unknown create outcome {other:?}"))),
        }
    }

    /// One `HMGET`, not a script: a read of one hash is atomic as it is, and
    /// a script costs Redis several times the command itself. The checks
    /// `read.lua` makes (the caller's own, still live) are made here.
    async fn get(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError> {
        let mut key = self.prefix_of(user);
        key.push_str("s:");
        key.push_str(id.as_hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&key).arg(&["u", "t", "c", "a", "e", "n", "m"]);
        let reply: Value = self.redis.cmd(&cmd).await.map_err(failure)?;
        let f = items(&reply)?;
        if f.len() != 7 {
            return Err(bad("HMGET of 7 fields"));
        }
        match &f[0] {
            Value::BulkString(owner) if owner.as_slice() == user.as_bytes() => {}
            _ => return Ok(None),
        }
        let session = record(id, Arc::from(user), &f[1..])?;
        Ok(session.is_live(now).then_some(session))
    }

    async fn list(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        let p = self.prefix_of(user);
        let reply = self.run(&READ, &p, vec![s(p.clone()), s(user), i(now)]).await?;
        sessions(&reply)
    }

    async fn touch(
        &self,
        user: &str,
        id: SessionId,
        activity: Activity,
        now: Millis,
        limits: &Limits,
    ) -> Result<Option<Touched>, StoreError> {
        let p = self.prefix_of(user);
        let (kind, tool) = match activity {
            Activity::Heartbeat => ("h", String::new()),
            Activity::Query => ("q", String::new()),
            Activity::Migrate { tool_set } => ("m", tool_set.to_string()),
        };
        let args = vec![
            s(p.clone()),
            s(user),
            s(id.to_string()),
            i(now),
            i(limits.idle_ttl_ms),
            i(limits.max_lifetime_ms),
            s(kind),
            s(tool),
        ];
        let reply = self.run(&TOUCH, &p, args).await?;
        let parts = items(&reply)?;
        if parts.is_empty() {
            return Ok(None);
        }
        let session = session(&parts[0])?;
        let previous_tool_set =
            Arc::from(text(parts.get(1).ok_or_else(|| bad("touch without a tool set"))?)?);
        Ok(Some(Touched { session, previous_tool_set }))
    }

    async fn delete(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError> {
        let p = self.prefix_of(user);
        let reply =
            self.run(&END, &p, vec![s(p.clone()), s(user), i(now), s("d"), s(id.to_string())]).await?;
        Ok(sessions(&reply)?.pop())
    }

    async fn revoke_user(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        let p = self.prefix_of(user);
        let reply = self.run(&END, &p, vec![s(p.clone()), s(user), i(now), s("r"), s("")]).await?;
        sessions(&reply)
    }

    async fn reap(&self, now: Millis, max: usize) -> Result<Vec<Session>, StoreError> {
        // Bounded once for the whole sweep (its scripts then need no `TIME`).
        let now = self.bounded(now).await?;
        // In rounds: each round, the groups that may hold more expired
        // sessions claim at once (the multiplexed connection pipelines the
        // calls) a share of what is left of `max` (at least one each; when
        // fewer are left than groups, the next groups in turn). A group that
        // claimed less than its share is drained for this sweep. So a sweep
        // returns at most `max`, and fewer only when fewer have expired.
        let mut waiting: std::collections::VecDeque<u32> = (0..GROUPS).collect();
        let (mut out, mut answered, mut last_error) = (Vec::new(), 0usize, None);
        while out.len() < max && !waiting.is_empty() {
            let left = max - out.len();
            let share = (left / waiting.len()).clamp(1, 1000);
            let round: Vec<u32> = waiting.drain(..waiting.len().min(left)).collect();
            let calls = round.iter().map(|&g| {
                let p = self.group_prefix(g);
                let args = vec![s(p.clone()), i(now), i(share as i64)];
                async move { (g, self.run_bounding(&REAP, &p, args, false).await) }
            });
            let mut round_answered = 0;
            for (g, reply) in futures::future::join_all(calls).await {
                // A group that fails is left for the next sweep; what the
                // others claimed (already removed) must be reported.
                match reply.and_then(|r| sessions(&r)) {
                    Ok(claimed) => {
                        round_answered += 1;
                        if claimed.len() >= share {
                            waiting.push_back(g);
                        }
                        out.extend(claimed);
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            answered += round_answered;
            if round_answered == 0 {
                break; // no group answered: the store is down
            }
        }
        match last_error {
            // Nothing got through at all: the store is down; say so.
            Some(e) if answered == 0 => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "reaper: some groups failed this sweep; they are retried on the next");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError> {
        let now = self.bounded(now).await?;
        let calls = (0..GROUPS).map(|g| {
            let p = self.group_prefix(g);
            async move { self.run_bounding(&STATS, &p, vec![s(p.clone()), i(now)], false).await }
        });
        let mut present: HashMap<String, i64> = HashMap::new();
        let mut stats = StoreStats::default();
        for reply in futures::future::join_all(calls).await {
            let reply = reply?;
            let parts = items(&reply)?;
            let (act, pending) = (items(&parts[0])?, items(&parts[1])?);
            for pair in act.chunks(2) {
                *present.entry(text(&pair[0])?).or_default() += int(&pair[1])?;
            }
            for t in pending {
                *present.entry(text(t)?).or_default() -= 1;
                stats.expired_pending += 1;
            }
        }
        for (tool_set, n) in present.into_iter().filter(|(_, n)| *n > 0) {
            stats.active_by_tool_set.insert(Arc::from(tool_set), n as u64);
        }
        Ok(stats)
    }

    /// Readiness: Redis answers (a Cluster: every slot has a master, and
    /// every master answers), and (checked until seen once) every node is
    /// Redis 7.0 or later. On an older one the rate-limit script fails on
    /// `PEXPIRE … GT`, and the limiter would quietly follow
    /// `rate_limit.on_store_error`: better to report the store down, and say why.
    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.health().await.map_err(failure)?;
        if self.version_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        // INFO may be refused (an ACL) or fail now: then check on a later probe.
        if let Ok(info) = self.redis.on_every_node(redis::cmd("INFO").arg("server")).await {
            match oldest_version(&Value::Array(info)) {
                Some((major, minor)) if major < 7 => {
                    let why =
                        format!("Redis {major}.{minor} is too old: sessiongate needs Redis 7.0 or later");
                    tracing::error!(error = %why, "the Redis store cannot be used");
                    return Err(StoreError::Unavailable(why));
                }
                _ => self.version_ok.store(true, Ordering::Relaxed),
            }
        }
        Ok(())
    }
}

/// The oldest `redis_version` (major, minor) in an `INFO` reply: one text,
/// or, from a Cluster, one per node.
fn oldest_version(info: &Value) -> Option<(u32, u32)> {
    let texts: Vec<String> = match info {
        Value::Map(nodes) => nodes.iter().filter_map(|(_, v)| text(v).ok()).collect(),
        Value::Array(nodes) => nodes.iter().filter_map(|v| text(v).ok()).collect(),
        other => text(other).ok().into_iter().collect(),
    };
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|line| line.trim().strip_prefix("redis_version:"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_clock_slack_is_the_lifecycles() {
        let slack = format!("local CLOCK_SLACK = {}\n", crate::sessions::lifecycle::CLOCK_SLACK_MS);
        assert!(include_str!("common.lua").contains(&slack), "common.lua must say {slack:?}");
    }

    #[test]
    fn the_oldest_redis_version_of_an_info_reply() {
        let info = |v: &str| {
            Value::BulkString(
                format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n").into_bytes(),
            )
        };
        assert_eq!(oldest_version(&info("7.0.15")), Some((7, 0)));
        assert_eq!(oldest_version(&info("6.2.14")), Some((6, 2)));
        let cluster = Value::Map(vec![
            (Value::SimpleString("127.0.0.1:7000".into()), info("7.2.4")),
            (Value::SimpleString("127.0.0.1:7001".into()), info("6.0.9")),
        ]);
        assert_eq!(oldest_version(&cluster), Some((6, 0)));
        assert_eq!(oldest_version(&Value::BulkString(b"# Server\r\n".to_vec())), None);
        assert_eq!(oldest_version(&info("x.y")), None);
    }

    #[test]
    fn groups_are_stable_and_spread() {
        assert_eq!(group_of("alice"), group_of("alice"));
        let used: std::collections::HashSet<u32> =
            (0..1000).map(|n| group_of(&format!("user-{n}"))).collect();
        assert!(used.len() > 60, "1000 users use {} of {GROUPS} groups", used.len());
    }
}
