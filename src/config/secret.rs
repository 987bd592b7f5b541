//! A string that never prints.
//!
//! Secrets (the HS256 key, API-key material) live in config like any other
//! value, but `Debug`, `Display` and `Serialize` show `[redacted]`, so neither
//! `check-config`, a log line nor a panic message can leak them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The only way to read the value: call sites that need it are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl Secret {
    /// What may be shown: nothing of a plain secret; a URL keeps everything
    /// but its password (`redis://:[redacted]@host:6379`).
    pub fn redacted(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.has_host() => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("[redacted]"));
                }
                u.to_string()
            }
            _ => "[redacted]".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"[redacted]\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
        let url = Secret::new("redis://:pw@cache:6379/0");
        assert_eq!(url.redacted(), "redis://:%5Bredacted%5D@cache:6379/0");
        assert_eq!(Secret::new("redis://cache:6379").redacted(), "redis://cache:6379");
    }
}
