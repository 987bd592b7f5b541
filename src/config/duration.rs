//! Durations in config are strings like `"30m"`, `"1s"` or `"250ms"`: parsed
//! by humantime, printed back in the largest whole unit, so `check-config`
//! output reads like the file it came from and parses again.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30m\" ({e})")))
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// For `Option<Duration>` fields (`#[serde(default, with = "duration::option")]`).
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => humantime::parse_duration(&text).map(Some).map_err(|e| {
                serde::de::Error::custom(format!("{text:?} is not a duration like \"30m\" ({e})"))
            }),
        }
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }
}

/// The shortest exact rendering in h, m, s or ms — `24h`, `30m`, `90s`,
/// `250ms`, `0ms` — except that one minute stays `60s`, as windows are written.
/// A value that is not whole milliseconds, or too large for milliseconds in a
/// u64, is seconds and an exact fraction (`1s 1us`, `1500us`, `2s 5ns`): what
/// is printed always reads back as the same value (found by fuzzing).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    // The short forms, when exact and small enough for humantime to read back.
    if d.subsec_nanos().is_multiple_of(1_000_000) && u64::try_from(ms).is_ok() {
        for (unit, size, from) in
            [("h", 3_600_000u128, 3_600_000u128), ("m", 60_000, 120_000), ("s", 1_000, 1_000)]
        {
            if ms >= from && ms.is_multiple_of(size) {
                return format!("{}{unit}", ms / size);
            }
        }
        return format!("{ms}ms");
    }
    // Otherwise seconds and an exact fraction (`1s 1us`, `2s 5ns`, `1500us`).
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    let fraction = match nanos {
        0 => String::new(),
        n if n.is_multiple_of(1_000) => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    };
    match (secs, fraction.is_empty()) {
        (0, _) => fraction,
        (_, true) => format!("{secs}s"),
        _ => format!("{secs}s {fraction}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_in_the_largest_whole_unit() {
        assert_eq!(format(Duration::from_secs(86_400)), "24h");
        assert_eq!(format(Duration::from_secs(7_200)), "2h");
        assert_eq!(format(Duration::from_secs(1_800)), "30m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(60)), "60s");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format(Duration::ZERO), "0ms");
        for d in [Duration::from_secs(86_400), Duration::from_millis(250), Duration::from_secs(90)] {
            assert_eq!(humantime::parse_duration(&format(d)).unwrap(), d, "round trip");
        }
    }

    /// Found by fuzzing `check-config`'s output: below a millisecond, and past
    /// u64 milliseconds, the value printed must still read back exactly.
    #[test]
    fn what_is_printed_always_reads_back_as_the_same_value() {
        assert_eq!(format(Duration::from_micros(1_000_001)), "1s 1us");
        assert_eq!(format(Duration::from_micros(1_500)), "1500us");
        assert_eq!(format(Duration::new(2, 5)), "2s 5ns");
        for d in [
            Duration::from_micros(1_000_001),
            Duration::new(2, 5),
            Duration::new(u64::MAX, 999_000_000),
            Duration::MAX,
        ] {
            assert_eq!(humantime::parse_duration(&format(d)).unwrap(), d, "{d:?} as {:?}", format(d));
        }
    }
}
