//! The sliding-window counter, as pure functions of a counter and a time.
//!
//! Two fixed buckets aligned to multiples of the window since the Unix epoch;
//! a request at `now` is admitted while
//! `previous × (1 − elapsed/window) + current < limit` (in floating point, no
//! rounding), where `elapsed` is the time since the current bucket began.
//! O(1) memory per key. Every backend (memory, the Redis Lua script) applies
//! exactly this arithmetic.
//!
//! Bounds, checked by the property tests: no aligned bucket ever holds more
//! than `limit` admitted requests, and no sliding window of the same length
//! more than `2 × limit` (the worst case: a full previous bucket at its very
//! end, then the current bucket refilling as that weight decays). On ordinary
//! traffic it admits within a few percent of an exact sliding log; the
//! report test prints the figures.

use crate::clock::Millis;

/// The state of one (principal, policy) window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Index of the current bucket: `floor(now / window)`.
    pub bucket: i64,
    pub current: u64,
    pub previous: u64,
}

impl Counter {
    /// The counter as seen at `now`: buckets that ended have moved on.
    pub fn rolled(self, now: Millis, window: Millis) -> Self {
        let bucket = now.div_euclid(window);
        match bucket - self.bucket {
            0 => self,
            1 => Counter { bucket, current: 0, previous: self.current },
            d if d > 1 => Counter { bucket, current: 0, previous: 0 },
            // A clock that went backwards: keep what we have.
            _ => self,
        }
    }

    /// The weighted count at `now` (the counter must be rolled to `now`).
    pub fn estimate(&self, now: Millis, window: Millis) -> f64 {
        let elapsed = (now - self.bucket * window).clamp(0, window) as f64 / window as f64;
        self.previous as f64 * (1.0 - elapsed) + self.current as f64
    }
}

/// What a check at `now` found, before any spending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub admits: bool,
    /// The counter rolled to `now` (not yet spent).
    pub counter: Counter,
}

pub fn check(counter: Counter, now: Millis, window: Millis, limit: u64) -> Verdict {
    let counter = counter.rolled(now, window);
    Verdict { admits: counter.estimate(now, window) < limit as f64, counter }
}

/// Count one admitted request.
pub fn spend(counter: Counter) -> Counter {
    Counter { current: counter.current + 1, ..counter }
}

/// How many more requests would be admitted at `now`: each admitted request
/// adds one to the estimate, and admission needs `estimate < limit`, so it is
/// `ceil(limit − estimate)`, or 0.
pub fn remaining(counter: Counter, now: Millis, window: Millis, limit: u64) -> u64 {
    let c = counter.rolled(now, window);
    let left = limit as f64 - c.estimate(now, window);
    if left <= 0.0 { 0 } else { left.ceil() as u64 }
}

/// The least wait in ms after which a request is admitted (0 if it is now).
/// Exact to the millisecond: at `now + result` it admits, one ms earlier not.
pub fn retry_after_ms(counter: Counter, now: Millis, window: Millis, limit: u64) -> Millis {
    let admits_at = |t: Millis| check(counter, t, window, limit).admits;
    if admits_at(now) {
        return 0;
    }
    let c = counter.rolled(now, window);
    let (start, end) = (c.bucket * window, (c.bucket + 1) * window);
    // The estimate falls linearly as the older bucket's weight decays: solve
    // `weight × (1 − elapsed/window) + rest < limit` for the elapsed time.
    let crossing = |bucket_start: Millis, weight: u64, rest: u64| {
        let need = 1.0 - (limit.saturating_sub(rest)) as f64 / weight as f64; // elapsed fraction to pass
        bucket_start + (need.clamp(0.0, 1.0) * window as f64).floor() as Millis + 1
    };
    let guess = if c.current < limit {
        // Within this bucket (`previous` > 0 here, or it would admit now).
        crossing(start, c.previous.max(1), c.current).min(end)
    } else {
        // This bucket alone is full: wait for the next, where it becomes the older one.
        crossing(end, c.current, 0)
    };
    // Float rounding can put the guess a millisecond or so off: settle it,
    // in a bounded number of steps (admission is certain two buckets ahead).
    let mut t = guess.max(now);
    for _ in 0..64 {
        if admits_at(t) {
            break;
        }
        t += 1;
    }
    if !admits_at(t) {
        t = end + window;
    }
    for _ in 0..64 {
        if t > now && admits_at(t - 1) {
            t -= 1;
        } else {
            break;
        }
    }
    t - now
}

/// `t` of the `RateLimit` header: seconds until the current bucket ends and
/// its weight starts to fall away.
pub fn reset_secs(counter: Counter, now: Millis, window: Millis) -> u64 {
    let c = counter.rolled(now, window);
    (((c.bucket + 1) * window - now).max(0) as u64).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const W: Millis = 10_000;

    fn admit(counter: &mut Counter, now: Millis, limit: u64) -> bool {
        let v = check(*counter, now, W, limit);
        *counter = if v.admits { spend(v.counter) } else { v.counter };
        v.admits
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses() {
        let mut c = Counter::default();
        let t = 1_000_000;
        assert!((0..5).all(|_| admit(&mut c, t, 5)));
        assert!(!admit(&mut c, t, 5));
        assert_eq!(remaining(c, t, W, 5), 0);
    }

    #[test]
    fn the_previous_bucket_weighs_in_linearly() {
        let start = 100 * W;
        let c = Counter { bucket: 99, current: 10, previous: 0 };
        // At 25% into the next bucket, the previous 10 weigh 7.5.
        let at = start + W / 4;
        assert_eq!(c.rolled(at, W).estimate(at, W), 7.5);
        assert!(check(c, at, W, 8).admits);
        assert!(!check(c, at, W, 7).admits);
        // 7.5, 8.5 and 9.5 are each below 10: three more fit.
        assert_eq!(remaining(c, at, W, 10), 3);
        let mut c = c;
        assert!((0..3).all(|_| admit(&mut c, at, 10)));
        assert!(!admit(&mut c, at, 10));
    }

    #[test]
    fn retry_after_is_exact_to_the_millisecond() {
        let c = Counter { bucket: 99, current: 10, previous: 0 };
        let now = 100 * W; // estimate 10 with limit 8: needs 10(1-e) < 8, e > 0.2
        let wait = retry_after_ms(c, now, W, 8);
        assert_eq!(wait, 2_001);
        assert!(check(c, now + wait, W, 8).admits);
        assert!(!check(c, now + wait - 1, W, 8).admits);
    }

    fn timestamps() -> impl Strategy<Value = Vec<Millis>> {
        // Bursty, sorted request times over about ten windows.
        proptest::collection::vec((0..100_000i64, 0..3u8), 1..400).prop_map(|v| {
            let mut t: Vec<Millis> =
                v.into_iter().map(|(x, burst)| if burst == 0 { x / 1000 * 1000 } else { x }).collect();
            t.sort();
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

        /// No aligned bucket holds more than `limit`; no sliding window of
        /// length W more than 2 × limit (the documented bound).
        #[test]
        fn never_admits_beyond_the_documented_bounds(times in timestamps(), limit in 1..20u64) {
            let base = 1_795_600_800_000;
            let mut c = Counter::default();
            let admitted: Vec<Millis> = times.iter().map(|t| base + t).filter(|&t| admit(&mut c, t, limit)).collect();
            let mut per_bucket = std::collections::HashMap::new();
            for t in &admitted {
                *per_bucket.entry(t.div_euclid(W)).or_insert(0u64) += 1;
            }
            prop_assert!(per_bucket.values().all(|&n| n <= limit));
            let mut window: VecDeque<Millis> = VecDeque::new();
            for &t in &admitted {
                while window.front().is_some_and(|&f| f <= t - W) {
                    window.pop_front();
                }
                window.push_back(t);
                prop_assert!(window.len() as u64 <= 2 * limit, "{} in a window, limit {}", window.len(), limit);
            }
        }

        /// A client that waits exactly the advice is admitted; one ms less is
        /// not — also far over the limit (shadow policies keep counting).
        #[test]
        fn retry_after_is_never_early(current in 0..3000u64, previous in 0..3000u64, limit in 1..20u64, at in 0..W) {
            let c = Counter { bucket: 99, current, previous };
            let now = 100 * W + at;
            let wait = retry_after_ms(c, now, W, limit);
            prop_assert!(check(c, now + wait, W, limit).admits);
            if wait > 0 {
                prop_assert!(!check(c, now + wait - 1, W, limit).admits);
            }
            // Whole seconds, rounded up, are never early either, and stay within a window (+1 s).
            let secs = (wait as u64).div_ceil(1000) as Millis;
            prop_assert!(check(c, now + secs * 1000, W, limit).admits);
            prop_assert!(secs * 1000 <= W + 1000);
        }

        /// Far over the limit with a day-long window the advice is found in
        /// closed form plus at most 128 one-millisecond settling steps (the
        /// first version stepped through the rest of the bucket), and is exact.
        #[test]
        fn retry_after_is_exact_far_over_the_limit_on_long_windows(current in 1..100_000u64, limit in 1..1000u64, at in 0..86_400_000i64) {
            let day = 86_400_000;
            let c = Counter { bucket: 20_000, current, previous: current };
            let now = 20_000 * day + at;
            let wait = retry_after_ms(c, now, day, limit);
            prop_assert!(check(c, now + wait, day, limit).admits);
            if wait > 0 {
                prop_assert!(!check(c, now + wait - 1, day, limit).admits);
            }
        }
    }

    /// The counter against an exact sliding-log limiter fed the same
    /// arrivals: how many each admits, and how far the counter's admissions
    /// exceed the limit in real sliding windows. Printed for docs/api.md
    /// (`cargo test --lib report -- --nocapture`).
    #[test]
    fn report_against_an_exact_sliding_log() {
        let mut rng_state = 0x2545F4914F6CDD1Du64;
        let mut rand = move || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let limit = 100u64;
        for (label, load) in [("0.8x", 8u64), ("1.2x", 12), ("3x", 30)] {
            let mut ours = Counter::default();
            let mut exact: VecDeque<Millis> = VecDeque::new();
            let mut ours_log: VecDeque<Millis> = VecDeque::new();
            let (mut n_ours, mut n_exact, mut over_windows, mut worst) = (0u64, 0u64, 0u64, 0usize);
            let mut t: Millis = 1_795_600_800_000;
            let requests = 100_000;
            for _ in 0..requests {
                // Uniform gaps averaging `load` tenths of the limit rate.
                t += (rand() % (2 * 10 * W as u64 / (limit * load))) as Millis;
                while exact.front().is_some_and(|&f| f <= t - W) {
                    exact.pop_front();
                }
                if (exact.len() as u64) < limit {
                    exact.push_back(t);
                    n_exact += 1;
                }
                if admit(&mut ours, t, limit) {
                    n_ours += 1;
                    while ours_log.front().is_some_and(|&f| f <= t - W) {
                        ours_log.pop_front();
                    }
                    ours_log.push_back(t);
                    if ours_log.len() as u64 > limit {
                        over_windows += 1;
                    }
                    worst = worst.max(ours_log.len());
                }
            }
            let diff = 100.0 * (n_ours as f64 - n_exact as f64) / n_exact as f64;
            eprintln!(
                "load {label} of a {limit}/{}s limit, {requests} requests: counter admitted {n_ours}, exact log {n_exact} \
                 ({diff:+.2}%); {:.2}% of admissions saw more than {limit} in their trailing window, at most {worst}",
                W / 1000,
                100.0 * over_windows as f64 / n_ours.max(1) as f64,
            );
            assert!(diff.abs() < 5.0, "admits within 5% of the exact log");
            assert!(worst as u64 <= 2 * limit);
        }
    }
}
