//! Time as the rest of the crate sees it: milliseconds since the Unix epoch,
//! behind a trait so tests can move it by hand.
//!
//! All lifecycle maths (expiry, least-recently-active, idempotency windows) works
//! in these milliseconds. Nothing here knows what the time is used for.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; shared by clones.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, d: std::time::Duration) {
        self.advance_ms(d.as_millis() as i64);
    }

    pub fn set_ms(&self, ms: Millis) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The latest instant RFC 3339 (four-digit years) can print: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: Millis = 253_402_300_799_999;

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-25T10:00:00.123Z`;
/// instants before 1970 or after year 9999 are clamped to those bounds.
/// (humantime's formatter: a fixed buffer, no calendar tables, several times
/// cheaper than chrono's on this per-response path.)
pub fn rfc3339_ms(ms: Millis) -> String {
    let ms = ms.clamp(0, LAST_RFC3339_MS) as u64;
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(rfc3339_ms(1_795_600_800_123), "2026-11-25T10:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_like_chrono_across_four_centuries() {
        // Every leap-year rule, month ends and the millisecond field.
        let mut ms: Millis = 0;
        while ms < LAST_RFC3339_MS {
            let chrono = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(rfc3339_ms(ms), chrono, "{ms}");
            ms += 86_399_997 * 7 + 13;
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1000);
        let c2 = c.clone();
        c.advance_ms(500);
        assert_eq!(c2.now_ms(), 1500);
    }
}
