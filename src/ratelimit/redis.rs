//! Counters in Redis, shared by every replica: one Lua script per request for
//! all the windows that apply (EVALSHA, reloaded on NOSCRIPT), and one key per
//! principal (`{p:<principal>}` hash tag: one slot in a Cluster), expiring
//! when idle. Concurrency slots live in a second key of the same tag.

use super::window::Counter;
use super::{LimiterBackend, LimiterError, WindowCheck, WindowResult};
use crate::clock::Millis;
use crate::store::redis::Redis;
use async_trait::async_trait;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

static WINDOWS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("window.lua")));

/// Take a slot if fewer than ARGV[2] are taken; the key expires after ARGV[3]
/// ms so a replica that dies mid-request cannot hold slots for ever.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
          if n >= tonumber(ARGV[2]) then return -1 end
          n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
          redis.call('PEXPIRE', KEYS[1], ARGV[3])
          return n",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
          if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
          return n",
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

    fn key(&self, kind: &str, principal: &str) -> String {
        format!("{}:{kind}:{{p:{principal}}}", self.redis.prefix())
    }
}

#[async_trait]
impl LimiterBackend for RedisLimiter {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check_windows(
        &self,
        principal: &str,
        checks: &[WindowCheck],
        now: Millis,
    ) -> Result<(bool, Vec<WindowResult>), LimiterError> {
        let num = |n: i64| n.to_string().into_bytes();
        let mut args: Vec<Vec<u8>> = vec![num(now), num(checks.len() as i64)];
        for c in checks {
            args.push(c.name.as_bytes().to_vec());
            args.push(num(c.limit as i64));
            args.push(num(c.window_ms));
            args.push(num(c.enforce as i64));
        }
        let key = self.key("rl", principal);
        let out: Vec<i64> =
            self.redis.script(&WINDOWS, &[&key], &args).await.map_err(|e| LimiterError(e.to_string()))?;
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

    async fn acquire(&self, principal: &str, policy: &WindowCheck) -> Result<Option<u64>, LimiterError> {
        let args = [
            policy.name.as_bytes().to_vec(),
            policy.limit.to_string().into_bytes(),
            self.slot_ttl.as_millis().to_string().into_bytes(),
        ];
        let key = self.key("cc", principal);
        let n: i64 =
            self.redis.script(&ACQUIRE, &[&key], &args).await.map_err(|e| LimiterError(e.to_string()))?;
        Ok((n >= 0).then_some(n as u64))
    }

    async fn release(&self, principal: &str, policy: &WindowCheck) {
        let key = self.key("cc", principal);
        let args = [policy.name.as_bytes().to_vec()];
        if let Err(e) = self.redis.script::<i64>(&RELEASE, &[&key], &args).await {
            // The slot key expires by itself; nothing leaks for long.
            tracing::debug!(error = %e, "could not release a concurrency slot; it will expire");
        }
    }
}
