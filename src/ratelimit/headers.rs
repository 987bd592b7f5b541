//! `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11)
//! and the `Retry-After` of a refusal, from the per-policy results of one check.
//!
//! `RateLimit-Policy` lists every policy that applied:
//! `"burst";q=10;w=1, "default";q=600;w=60, "queries";q=4;qu="concurrent-requests"`.
//! `RateLimit` names the most constrained one — smallest remaining `r`, ties
//! broken by the longest reset `t`: `"default";r=42;t=17`.

use super::window::{self, Counter};
use super::{WindowCheck, WindowResult};
use crate::clock::Millis;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub policy: String,
    pub limit: String,
}

#[derive(Debug)]
struct Item {
    name: Arc<str>,
    quota: u64,
    /// Window seconds; `None` for a concurrency policy.
    window_secs: Option<u64>,
    remaining: u64,
    reset_secs: u64,
    /// Refused the request (and is enforced).
    blocking: bool,
    retry_after_ms: Millis,
}

pub struct Report {
    now: Millis,
    items: super::PerPolicy<Item>,
}

impl Report {
    pub fn new(now: Millis) -> Self {
        Self { now, items: super::PerPolicy::new() }
    }

    pub fn window(&mut self, check: &WindowCheck, result: &WindowResult, now: Millis) {
        let counter: Counter = result.counter;
        let (w, limit) = (check.window_ms, check.limit);
        let blocking = !result.admits && check.enforce;
        // Only a blocking window needs its wait (a shadow one can be far over).
        let retry_after_ms = if blocking { window::retry_after_ms(counter, now, w, limit) } else { 0 };
        self.items.push(Item {
            name: check.name.clone(),
            quota: limit,
            window_secs: Some((w / 1000) as u64),
            remaining: window::remaining(counter, now, w, limit),
            reset_secs: if blocking {
                (retry_after_ms as u64).div_ceil(1000)
            } else {
                window::reset_secs(counter, now, w)
            },
            blocking,
            retry_after_ms,
        });
    }

    pub fn concurrency(&mut self, check: &WindowCheck, in_flight: u64, blocking: bool) {
        self.items.push(Item {
            name: check.name.clone(),
            quota: check.limit,
            window_secs: None,
            remaining: check.limit.saturating_sub(in_flight),
            reset_secs: if blocking { 1 } else { 0 },
            blocking,
            retry_after_ms: if blocking { 1000 } else { 0 },
        });
    }

    /// Nothing to report: every policy's store failed (and failures admit).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whole seconds until every blocking policy admits, rounded up: never
    /// early, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.items.iter().filter(|i| i.blocking).map(|i| i.retry_after_ms).max().unwrap_or(0);
        (ms.max(1) as u64).div_ceil(1000)
    }

    pub fn violated(&self) -> Vec<Arc<str>> {
        self.items.iter().filter(|i| i.blocking).map(|i| i.name.clone()).collect()
    }

    pub fn render(&self) -> RateLimitHeaders {
        // Pushed piece by piece (itoa for the numbers): this runs on every
        // admitted request, and the formatting machinery cost more than the check.
        fn item(out: &mut String, name: &str, pairs: &[(&str, u64)]) {
            out.push('"');
            out.push_str(name);
            out.push('"');
            for (key, value) in pairs {
                out.push(';');
                out.push_str(key);
                out.push('=');
                out.push_str(itoa::Buffer::new().format(*value));
            }
        }
        let mut policy = String::with_capacity(32 * self.items.len());
        for (n, i) in self.items.iter().enumerate() {
            if n > 0 {
                policy.push_str(", ");
            }
            match i.window_secs {
                Some(w) => item(&mut policy, &i.name, &[("q", i.quota), ("w", w)]),
                None => {
                    item(&mut policy, &i.name, &[("q", i.quota)]);
                    policy.push_str(";qu=\"concurrent-requests\"");
                }
            }
        }
        let mut limit = String::with_capacity(40);
        if let Some(i) = self
            .items
            .iter()
            .min_by(|a, b| a.remaining.cmp(&b.remaining).then(b.reset_secs.cmp(&a.reset_secs)))
        {
            item(&mut limit, &i.name, &[("r", i.remaining), ("t", i.reset_secs)]);
        }
        let _ = self.now;
        RateLimitHeaders { policy, limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, limit: u64, window_ms: Millis) -> WindowCheck {
        WindowCheck { index: 0, name: Arc::from(name), limit, window_ms, enforce: true }
    }

    #[test]
    fn renders_the_draft_11_syntax_and_picks_the_most_constrained() {
        let now = 1_795_600_800_000 + 43_000; // 43 s into a 60 s bucket, 0 into a 1 s one
        let mut r = Report::new(now);
        let burst = Counter { bucket: now / 1000, current: 8, previous: 0 };
        r.window(&check("burst", 10, 1000), &WindowResult { admits: true, counter: burst }, now);
        let default = Counter { bucket: now / 60_000, current: 558, previous: 0 };
        r.window(&check("default", 600, 60_000), &WindowResult { admits: true, counter: default }, now);
        r.concurrency(&check("queries", 4, 0), 1, false);
        let h = r.render();
        assert_eq!(
            h.policy,
            r#""burst";q=10;w=1, "default";q=600;w=60, "queries";q=4;qu="concurrent-requests""#
        );
        // burst has 2 left, queries 3, default 42: burst is the most constrained.
        assert_eq!(h.limit, r#""burst";r=2;t=1"#);
        assert!(r.violated().is_empty());
    }

    #[test]
    fn ties_go_to_the_longest_reset_and_a_refusal_reports_its_wait() {
        let now = 1_795_600_800_000;
        let mut r = Report::new(now);
        let full = |limit| Counter { bucket: now / 1000, current: limit, previous: 0 };
        r.window(&check("burst", 5, 1000), &WindowResult { admits: false, counter: full(5) }, now);
        let sustained = Counter { bucket: now / 60_000, current: 100, previous: 0 };
        r.window(&check("sustained", 100, 60_000), &WindowResult { admits: false, counter: sustained }, now);
        let h = r.render();
        assert!(h.limit.starts_with("\"sustained\";r=0;t="), "{}", h.limit);
        assert_eq!(
            r.violated().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            vec!["burst", "sustained"]
        );
        assert!(r.retry_after_secs() >= 60);
    }
}
