//! In-process counters: per shard, a map from principal to its windows and
//! in-flight counts; the shard lock makes each request's check-and-spend
//! atomic. Looked up by `&str`, so the request path allocates only for a
//! principal's first request.

use super::window::{self, Counter};
use super::{LimiterBackend, LimiterError, PerPolicy, WindowCheck, WindowResult};
use crate::clock::Millis;
use async_trait::async_trait;
use hashbrown::HashMap;
use parking_lot::Mutex;
use std::hash::BuildHasher;

const SHARDS: usize = 32;

#[derive(Default)]
struct PrincipalState {
    /// (policy index, window, counter, when the key may be forgotten); the
    /// window is part of the key so a changed window starts afresh.
    windows: Vec<(usize, Millis, Counter, Millis)>,
    /// (policy index, requests in flight)
    in_flight: Vec<(usize, u64)>,
}

#[derive(Default)]
struct Shard(HashMap<String, PrincipalState>);

impl Shard {
    /// One hash and probe; the key is made only for a principal's first request.
    fn state(&mut self, principal: &str) -> &mut PrincipalState {
        self.0.entry_ref(principal).or_default()
    }
}

pub struct MemoryLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
        }
    }
}

impl MemoryLimiter {
    fn shard(&self, principal: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(principal) as usize) % SHARDS]
    }

    /// Principals with state held (for tests of idle-key expiry).
    pub fn principals(&self) -> usize {
        self.shards.iter().map(|s| s.lock().0.len()).sum()
    }
}

#[async_trait]
impl LimiterBackend for MemoryLimiter {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn check_windows(
        &self,
        principal: &str,
        checks: &[WindowCheck],
        now: Millis,
    ) -> Result<(bool, PerPolicy<WindowResult>), LimiterError> {
        let mut shard = self.shard(principal).lock();
        let state = shard.state(principal);
        // A changed window (runtime config) finds no counter and starts afresh.
        let counter_of = |state: &PrincipalState, c: &WindowCheck| {
            state
                .windows
                .iter()
                .find(|(i, w, _, _)| *i == c.index && *w == c.window_ms)
                .map(|(_, _, counter, _)| *counter)
                .unwrap_or_default()
        };
        let verdicts: PerPolicy<window::Verdict> =
            checks.iter().map(|c| window::check(counter_of(state, c), now, c.window_ms, c.limit)).collect();
        let spend = checks.iter().zip(&verdicts).all(|(c, v)| v.admits || !c.enforce);
        let mut results = PerPolicy::with_capacity(checks.len());
        for (c, v) in checks.iter().zip(verdicts) {
            let counter = if spend { window::spend(v.counter) } else { v.counter };
            // Forgettable once both of its buckets have passed.
            let idle_after = (counter.bucket + 2) * c.window_ms;
            match state.windows.iter_mut().find(|(i, _, _, _)| *i == c.index) {
                Some(entry) => *entry = (c.index, c.window_ms, counter, idle_after),
                None => state.windows.push((c.index, c.window_ms, counter, idle_after)),
            }
            results.push(WindowResult { admits: v.admits, counter });
        }
        Ok((spend, results))
    }

    /// In process, a slot is a count: the guard always gives it back (a
    /// crash takes the counts with it), so tokens and deadlines are not needed.
    async fn acquire(
        &self,
        principal: &str,
        policy: &WindowCheck,
        _token: u64,
        _now: Millis,
    ) -> Result<Option<u64>, LimiterError> {
        let mut shard = self.shard(principal).lock();
        let state = shard.state(principal);
        let n = match state.in_flight.iter_mut().find(|(i, _)| *i == policy.index) {
            Some((_, n)) => n,
            None => {
                state.in_flight.push((policy.index, 0));
                &mut state.in_flight.last_mut().expect("just pushed").1
            }
        };
        if *n >= policy.limit {
            return Ok(None);
        }
        *n += 1;
        Ok(Some(*n))
    }

    async fn release(&self, principal: &str, policy: &WindowCheck, token: u64) {
        self.release_now(principal, policy, token);
    }

    fn release_now(&self, principal: &str, policy: &WindowCheck, _token: u64) -> bool {
        let mut shard = self.shard(principal).lock();
        if let Some(state) = shard.0.get_mut(principal) {
            if let Some((_, n)) = state.in_flight.iter_mut().find(|(i, _)| *i == policy.index) {
                *n = n.saturating_sub(1);
            }
            state.in_flight.retain(|(_, n)| *n > 0);
        }
        true
    }

    async fn sweep(&self, now: Millis) {
        for shard in self.shards.iter() {
            shard.lock().0.retain(|_, s| {
                s.windows.retain(|(_, _, _, idle_after)| *idle_after > now);
                !s.windows.is_empty() || !s.in_flight.is_empty()
            });
        }
    }
}
