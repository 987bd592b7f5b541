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

    /// Whether this clock reads the real time, so that another real clock (a
    /// shared store's) may bound it. A test's clock is not: it may be set
    /// anywhere.
    fn is_wall(&self) -> bool {
        false
    }
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

    fn is_wall(&self) -> bool {
        true
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

/// An RFC 3339 UTC instant in a fixed buffer: no allocation, no `fmt`.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    buf: [u8; 27],
    len: u8,
}

/// "00" to "99": two digits per lookup.
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII digits and separators")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// `secs` since the epoch (in range: the callers clamp), and a fraction of
    /// 3 or 6 digits. Two digits per table lookup at fixed places, not each
    /// digit divided out alone (what that saved, as last measured:
    /// `docs/performance.md#hand-written-fast-paths--ledger`).
    fn new(secs: i64, fraction: u32, digits: usize) -> Self {
        fn pair(buf: &mut [u8; 27], at: usize, v: u32) {
            let i = (v % 100) as usize * 2;
            buf[at] = PAIRS[i];
            buf[at + 1] = PAIRS[i + 1];
        }
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        // Days to a proleptic Gregorian date: Howard Hinnant's
        // `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        pair(&mut buf, 0, year / 100);
        pair(&mut buf, 2, year);
        pair(&mut buf, 5, month as u32);
        pair(&mut buf, 8, day as u32);
        pair(&mut buf, 11, sod / 3600);
        pair(&mut buf, 14, sod / 60 % 60);
        pair(&mut buf, 17, sod % 60);
        if digits == 6 {
            pair(&mut buf, 20, fraction / 10_000);
            pair(&mut buf, 22, fraction / 100);
            pair(&mut buf, 24, fraction);
        } else {
            buf[20] = b'0' + (fraction / 100 % 10) as u8;
            pair(&mut buf, 21, fraction);
        }
        buf[20 + digits] = b'Z';
        Self { buf, len: (21 + digits) as u8 }
    }

    /// Millisecond precision; instants before 1970 or after year 9999 are
    /// clamped to those bounds.
    pub fn millis(ms: Millis) -> Self {
        let ms = ms.clamp(0, LAST_RFC3339_MS);
        Self::new(ms / 1000, (ms % 1000) as u32, 3)
    }

    /// Microsecond precision (log lines), clamped like `millis`.
    pub fn micros(us: i64) -> Self {
        let us = us.clamp(0, LAST_RFC3339_MS * 1000 + 999);
        Self::new(us / 1_000_000, (us % 1_000_000) as u32, 6)
    }

    /// The wall clock now, in microseconds (a clock before 1970 prints the epoch).
    pub fn now_micros() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self::micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-25T10:00:00.123Z`;
/// instants before 1970 or after year 9999 are clamped to those bounds.
pub fn rfc3339_ms(ms: Millis) -> String {
    Rfc3339::millis(ms).as_str().to_owned()
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
    fn formats_like_chrono_from_1970_to_9999() {
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
    fn formats_micros_like_chrono_from_1970_to_9999() {
        let mut us: i64 = 0;
        while us < LAST_RFC3339_MS * 1000 {
            let chrono = chrono::DateTime::from_timestamp_micros(us)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(Rfc3339::micros(us).as_str(), chrono, "{us}");
            us += 86_399_999_997 * 5 + 1_234_567;
        }
        assert_eq!(Rfc3339::micros(-1).as_str(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Rfc3339::micros(i64::MAX).as_str(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Rfc3339::micros(1_795_600_800_123_456).to_string(), "2026-11-25T10:00:00.123456Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1000);
        let c2 = c.clone();
        c.advance_ms(500);
        assert_eq!(c2.now_ms(), 1500);
    }
}
