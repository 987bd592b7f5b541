//! `ratelimit_headers`: `ratelimit::headers::Report` (the `RateLimit-Policy`,
//! `RateLimit` and `Retry-After` values) over the window maths of
//! `ratelimit::window`.
//!
//! The input decodes (see [`Input`]) into a time, and one to six policies,
//! each a window (limit, whole-second window of 1 s to 24 h as config
//! validation allows, enforced or shadow, and the counter the backend holds,
//! its bucket up to five windows behind or two ahead of the clock, i.e. a
//! clock that went backwards) or a concurrency policy (limit, slots in use).
//! Policy names are valid config names, limits at most 999,999,999,999,999
//! (what a structured-field Integer can carry; `config_load` checks that a
//! valid configuration stays within it).
//!
//! By default the report is built as `RateLimiter::check` builds it, with
//! results as `LimiterBackend::check_windows` documents them (a request is
//! counted in every window only if every enforced one admits). With bit 0 of
//! the first byte set, window results are arbitrary instead (`admits` need
//! not match the counter).
//!
//! Properties, beyond "no panic or overflow":
//! - both header values are valid `http::HeaderValue`s and parse as RFC 9651
//!   Lists in the draft-11 shape: `RateLimit-Policy` one String item per
//!   policy, in order, with exactly `q` (the limit) and `w` (window seconds)
//!   or `qu="concurrent-requests"`; `RateLimit` one item naming a policy with
//!   exactly `r` and `t`, `r` the least remaining quota of all, and never
//!   more than that policy's `q`;
//! - on a refusal: `Retry-After` ≥ 1 s; waiting it, every refusing window
//!   admits (never early); it is no later than the end of the bucket after
//!   the counter's (rounded up to the second: two windows at most, more only
//!   when the counter is ahead of a clock that went back), as is a refusing
//!   policy's `t`, and a non-refusing window's `t` is the end of its
//!   counter's bucket; `RateLimit` says `r=0`; `violated()` lists exactly
//!   the refusing policies.

use super::Input;
use super::sf::{self, Bare};
use sessiongate::clock::Millis;
use sessiongate::config::is_valid_name;
use sessiongate::ratelimit::headers::{RateLimitHeaders, Report};
use sessiongate::ratelimit::window::{self, Counter};
use sessiongate::ratelimit::{WindowCheck, WindowResult};
use std::sync::Arc;

/// The structured-field Integer range (RFC 9651 §3.3.1).
pub const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

const NAMES: [&str; 6] = ["default", "burst", "session-create", "queries-in-flight", "a", "x.y_z-9"];

enum Kind {
    Window { counter: Counter },
    Concurrency { in_flight: u64, full: bool },
}

struct Policy {
    check: WindowCheck,
    kind: Kind,
}

fn name(input: &mut Input, used: &[Policy], i: usize) -> String {
    let pick = input.byte();
    let mut name = if (pick as usize) < 6 * 40 {
        NAMES[pick as usize % NAMES.len()].to_string()
    } else {
        let s = input.string(56);
        if is_valid_name(&s) { s } else { format!("p{i}") }
    };
    if used.iter().any(|p| *p.check.name == *name) {
        name = format!("{name}-{i}");
    }
    assert!(is_valid_name(&name));
    name
}

fn policies(input: &mut Input, now: Millis) -> Vec<Policy> {
    let n = input.byte() as usize % 6 + 1;
    let mut out: Vec<Policy> = Vec::with_capacity(n);
    for i in 0..n {
        let kind = input.byte();
        let name = name(input, &out, i);
        let limit = match input.byte() % 4 {
            0 => input.range(1, 10),
            1 => input.range(1, 1000),
            2 => input.range(1, 1 << 32),
            // The largest a structured-field Integer can say; larger limits
            // must be refused by config validation (`config_load` checks it).
            _ => input.range(SF_INTEGER_MAX - 1000, SF_INTEGER_MAX),
        };
        let enforce = input.bool();
        let (window_ms, kind) = if kind & 1 == 0 {
            let w = input.range(1, 86_400) as Millis * 1000;
            let ahead = (input.byte() % 8) as i64 - 5;
            // Counts a backend can hold: up to three times the limit (shadow
            // policies and lowered limits), far below overflow.
            let cap = limit.saturating_mul(3).min(1 << 48);
            let counter = Counter {
                bucket: now.div_euclid(w) + ahead,
                current: input.range(0, cap),
                previous: input.range(0, cap),
            };
            (w, Kind::Window { counter })
        } else {
            let in_flight = input.range(0, limit - 1);
            (0, Kind::Concurrency { in_flight, full: input.bool() })
        };
        let check = WindowCheck { index: i, name: Arc::from(name.as_str()), limit, window_ms, enforce };
        out.push(Policy { check, kind });
    }
    out
}

/// What the report was told about one policy, for the oracle.
struct Told<'a> {
    policy: &'a Policy,
    remaining: u64,
    /// Refused the request and is enforced.
    blocking: bool,
    /// The window counter after the step.
    counter: Option<Counter>,
}

/// Returns the rendered headers (the fuzz target also checks them with the
/// `sfv` crate).
pub fn check(data: &[u8]) -> Option<RateLimitHeaders> {
    let mut input = Input::new(data);
    let arbitrary_results = input.byte() & 1 == 1;
    let now = input.range(0, 1 << 45) as Millis;
    let policies = policies(&mut input, now);
    let mut report = Report::new(now);
    let mut told: Vec<Told> = Vec::new();

    // As `RateLimiter::check`: concurrency slots first; a refusal there ends it.
    let mut refused = false;
    for p in &policies {
        if let Kind::Concurrency { in_flight, full } = p.kind {
            let c = &p.check;
            let (count, blocking) = if full { (c.limit, c.enforce) } else { (in_flight + 1, false) };
            report.concurrency(c, count, blocking);
            refused |= blocking;
            told.push(Told { policy: p, remaining: c.limit - count, blocking, counter: None });
        }
    }
    if !refused {
        let windows: Vec<(&Policy, Counter)> = policies
            .iter()
            .filter_map(|p| match p.kind {
                Kind::Window { counter } => Some((p, counter)),
                Kind::Concurrency { .. } => None,
            })
            .collect();
        let verdicts: Vec<window::Verdict> =
            windows.iter().map(|(p, c)| window::check(*c, now, p.check.window_ms, p.check.limit)).collect();
        let spend = windows.iter().zip(&verdicts).all(|((p, _), v)| v.admits || !p.check.enforce);
        for ((p, _), v) in windows.iter().zip(&verdicts) {
            let c = &p.check;
            let admits = if arbitrary_results { input.bool() } else { v.admits };
            let counter = if spend { window::spend(v.counter) } else { v.counter };
            report.window(c, &WindowResult { admits, counter }, now);
            let blocking = !admits && c.enforce;
            refused |= blocking;
            let remaining = window::remaining(counter, now, c.window_ms, c.limit);
            told.push(Told { policy: p, remaining, blocking, counter: Some(counter) });
        }
    }

    let headers = report.render();
    check_headers(&headers, &told, now);
    let violated: Vec<String> = report.violated().iter().map(|s| s.to_string()).collect();
    let blocking: Vec<String> =
        told.iter().filter(|t| t.blocking).map(|t| t.policy.check.name.to_string()).collect();
    assert_eq!(violated, blocking, "violated() lists the refusing policies");
    let retry = report.retry_after_secs();
    assert!(retry >= 1, "Retry-After is at least 1");
    assert!(http::HeaderValue::try_from(retry.to_string()).is_ok());
    if refused && !arbitrary_results {
        check_refusal(&headers, &told, now, retry);
    }
    Some(headers)
}

fn check_headers(h: &RateLimitHeaders, told: &[Told], now: Millis) {
    for (field, value) in [("RateLimit-Policy", &h.policy), ("RateLimit", &h.limit)] {
        assert!(http::HeaderValue::from_str(value).is_ok(), "{field} is not a valid header value: {value:?}");
    }
    let list = sf::parse_list(&h.policy)
        .unwrap_or_else(|e| panic!("RateLimit-Policy is not a structured-field List ({e}): {}", h.policy));
    assert_eq!(list.len(), told.len(), "one RateLimit-Policy member per policy: {}", h.policy);
    for (item, t) in list.iter().zip(told) {
        let c = &t.policy.check;
        assert_eq!(item.bare, Bare::String(c.name.to_string()), "{}", h.policy);
        let keys: Vec<&str> = item.params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(item.param("q"), Some(&Bare::Integer(c.limit as i64)), "q of {}", h.policy);
        match t.policy.kind {
            Kind::Window { .. } => {
                assert_eq!(keys, ["q", "w"], "{}", h.policy);
                assert_eq!(item.param("w"), Some(&Bare::Integer(c.window_ms / 1000)), "w of {}", h.policy);
            }
            Kind::Concurrency { .. } => {
                assert_eq!(keys, ["q", "qu"], "{}", h.policy);
                assert_eq!(item.param("qu"), Some(&Bare::String("concurrent-requests".into())));
            }
        }
    }
    let list = sf::parse_list(&h.limit)
        .unwrap_or_else(|e| panic!("RateLimit is not a structured-field List ({e}): {}", h.limit));
    assert_eq!(list.len(), 1, "RateLimit names one policy: {}", h.limit);
    let item = &list[0];
    let keys: Vec<&str> = item.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["r", "t"], "{}", h.limit);
    let (Some(Bare::Integer(r)), Some(Bare::Integer(t))) = (item.param("r"), item.param("t")) else {
        panic!("r and t are Integers: {}", h.limit)
    };
    assert!(*r >= 0 && *t >= 0, "{}", h.limit);
    let named = told
        .iter()
        .find(|x| item.bare == Bare::String(x.policy.check.name.to_string()))
        .unwrap_or_else(|| panic!("RateLimit names no policy of RateLimit-Policy: {}", h.limit));
    let least = told.iter().map(|x| x.remaining).min().expect("at least one policy");
    assert_eq!(*r as u64, least, "r is the least remaining quota: {}", h.limit);
    assert_eq!(named.remaining, least, "RateLimit names a most constrained policy: {}", h.limit);
    assert!(least <= named.policy.check.limit, "r exceeds q: {} vs {}", h.limit, h.policy);
    // `t`: a refusing window's wait; otherwise the end of its counter's bucket.
    let t_ms = *t * 1000;
    match (named.counter, named.blocking) {
        (Some(c), blocking) => {
            let bound = (c.bucket + if blocking { 2 } else { 1 }) * named.policy.check.window_ms - now;
            assert!(t_ms < bound + 1000, "t beyond its bound: {} ({bound} ms)", h.limit);
        }
        (None, _) => assert!(*t <= 1, "{}", h.limit),
    }
}

fn check_refusal(h: &RateLimitHeaders, told: &[Told], now: Millis, retry: u64) {
    let r = sf::parse_list(&h.limit).expect("checked")[0].param("r").cloned();
    assert_eq!(r, Some(Bare::Integer(0)), "a refusal's RateLimit says r=0: {}", h.limit);
    let retry_ms = (retry as i64).saturating_mul(1000);
    let mut bound: i64 = 1000;
    for t in told.iter().filter(|t| t.blocking) {
        let c = &t.policy.check;
        if let Some(counter) = t.counter {
            assert!(
                window::check(counter, now.saturating_add(retry_ms), c.window_ms, c.limit).admits,
                "Retry-After {retry} s is early for {:?} (limit {}, window {} ms, {counter:?}, now {now})",
                c.name,
                c.limit,
                c.window_ms
            );
            // Admission is certain once the counter's bucket and the next
            // have passed (it is rolled to `now`, or ahead if the clock went back).
            bound = bound.max((counter.bucket + 2) * c.window_ms - now + 1000);
        }
    }
    assert!(retry_ms <= bound, "Retry-After {retry} s is beyond every refusing window (bound {bound} ms)");
}
