//! Counters in Redis, shared by every replica: one Lua script per request for
//! all the windows that apply (EVALSHA, reloaded on NOSCRIPT), and one key per
//! principal (`{p:<principal>}` hash tag: one slot in a Cluster), expiring
//! when idle. Concurrency slots live in sorted sets of the same tag.

use super::window::Counter;
use super::{LimiterBackend, LimiterError, WindowCheck, WindowResult};
use crate::clock::Millis;
use crate::store::redis::{Redis, RedisFailure, evalsha};
use async_trait::async_trait;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

static WINDOWS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("window.lua")));

/// Slots are the members of a sorted set, one per request, scored by a
/// deadline: a slot whose holder never gave it back (a lost reply, a crashed
/// replica) lapses at its own deadline even while the principal stays busy.
/// ARGV: now, deadline, limit, token, key TTL.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
          if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
          redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
          return redis.call('ZCARD', KEYS[1])",
    )
});

pub struct RedisLimiter {
    redis: Arc<Redis>,
    /// How long an in-flight slot may outlive a crashed holder.
    slot_ttl: Duration,
}

impl RedisLimiter {
    pub fn new(redis: Arc<Redis>, slot_ttl: Duration) -> Self {
        Self { redis, slot_ttl }
    }

    /// `<prefix>:<kind>:{p:<principal>}`, pushed piece by piece (it is made
    /// on every request, and `format!` costs several times as much).
    fn key(&self, kind: &str, principal: &str) -> String {
        let prefix = self.redis.prefix();
        let mut key = String::with_capacity(prefix.len() + kind.len() + principal.len() + 8);
        for piece in [prefix, ":", kind, ":{p:", principal, "}"] {
            key.push_str(piece);
        }
        key
    }

    /// One sorted set per (principal, policy), in the principal's slot.
    fn slot_key(&self, principal: &str, policy: &WindowCheck) -> String {
        format!("{}:{}", self.key("cc", principal), policy.name)
    }

    /// A limiter call, measured as the store's operation `ratelimit`: half of
    /// a request's Redis round trips, on the same latency panel as the other.
    async fn timed<T>(&self, call: impl Future<Output = Result<T, RedisFailure>>) -> Result<T, LimiterError> {
        let started = Instant::now();
        let result = call.await;
        self.redis.events().store_operation("redis", "ratelimit", started.elapsed(), result.is_ok());
        result.map_err(|e| LimiterError(e.to_string()))
    }
}

#[async_trait]
impl LimiterBackend for RedisLimiter {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn remote(&self) -> bool {
        true
    }

    async fn check_windows(
        &self,
        principal: &str,
        checks: &[WindowCheck],
        now: Millis,
    ) -> Result<(bool, super::PerPolicy<WindowResult>), LimiterError> {
        // ARGV (window.lua): now; per policy its limit, window and enforce;
        // then per policy its three fields, `<policy>:<window>:b|c|p`.
        let key = self.key("rl", principal);
        let mut cmd = evalsha(&WINDOWS, &[&key]);
        cmd.arg(now);
        for c in checks {
            cmd.arg(c.limit).arg(c.window_ms).arg(if c.enforce { "1" } else { "0" });
        }
        let mut window = itoa::Buffer::new();
        let mut field = Vec::with_capacity(64);
        for c in checks {
            field.clear();
            field.extend_from_slice(c.name.as_bytes());
            field.push(b':');
            field.extend_from_slice(window.format(c.window_ms).as_bytes());
            field.push(b':');
            for part in [b'b', b'c', b'p'] {
                field.push(part);
                cmd.arg(field.as_slice());
                field.pop();
            }
        }
        let reply: Vec<u8> = self.timed(self.redis.eval(&WINDOWS, &cmd)).await?;
        let out: Vec<i64> = reply
            .split(|b| *b == b' ')
            .map(|n| std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| LimiterError("unexpected reply: not integers".into()))?;
        if out.len() != 1 + 4 * checks.len() {
            return Err(LimiterError(format!("unexpected reply of {} values", out.len())));
        }
        let results = out[1..]
            .chunks(4)
            .map(|r| WindowResult {
                admits: r[0] == 1,
                counter: Counter { bucket: r[1], current: r[2] as u64, previous: r[3] as u64 },
            })
            .collect();
        Ok((out[0] == 1, results))
    }

    async fn acquire(
        &self,
        principal: &str,
        policy: &WindowCheck,
        token: u64,
        now: Millis,
    ) -> Result<Option<u64>, LimiterError> {
        let ttl = self.slot_ttl.as_millis() as i64;
        let num = |n: i64| n.to_string().into_bytes();
        let args =
            [num(now), num(now + ttl), num(policy.limit as i64), token.to_string().into_bytes(), num(ttl)];
        let key = self.slot_key(principal, policy);
        let n: i64 = self.timed(self.redis.script(&ACQUIRE, &[&key], &args)).await?;
        Ok((n >= 0).then_some(n as u64))
    }

    async fn release(&self, principal: &str, policy: &WindowCheck, token: u64) {
        let key = self.slot_key(principal, policy);
        if let Err(e) = self.redis.cmd::<i64>(redis::cmd("ZREM").arg(&key).arg(token.to_string())).await {
            // The slot lapses at its deadline; nothing is held for long.
            tracing::debug!(error = %e, "could not release a concurrency slot; it will lapse");
        }
    }
}
