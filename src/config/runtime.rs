//! The runtime-mutable part of the configuration, as a JSON document:
//!
//! ```json
//! {"sessions": {"max_per_user": 10, "idle_ttl": "30m", "max_lifetime": "24h",
//!               "on_limit": "evict_oldest", "idempotency_ttl": "24h",
//!               "max_idempotency_keys_per_user": 1000},
//!  "rate_limit": {"policies": {"default": {"limit": 600, "window": "60s"}}}}
//! ```
//!
//! Saved *overrides* are a sparse document of the same shape. The effective
//! document is the file's values with the overrides merged over them; a
//! change is an RFC 7396 JSON Merge Patch applied to the overrides (`null`
//! removes an override, restoring the file's value). Every change is
//! validated exactly like the file. This module is pure: storing and applying
//! overrides happen elsewhere.

use super::{Config, OnLimit, PolicyKind, duration};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    sessions: SessionsPart,
    rate_limit: RateLimitPart,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsPart {
    max_per_user: u32,
    #[serde(with = "duration")]
    idle_ttl: Duration,
    #[serde(with = "duration")]
    max_lifetime: Duration,
    on_limit: OnLimit,
    #[serde(with = "duration")]
    idempotency_ttl: Duration,
    max_idempotency_keys_per_user: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitPart {
    policies: BTreeMap<String, PolicyPart>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyPart {
    limit: u64,
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    window: Option<Duration>,
}

/// A field that failed validation: `path` like `sessions.max_per_user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// The runtime document of a configuration (the file's values, or the
/// effective ones once overrides are applied).
pub fn document(config: &Config) -> Value {
    let s = &config.sessions;
    let policies: BTreeMap<String, PolicyPart> = config
        .rate_limit
        .policies
        .iter()
        .map(|p| (p.name.clone(), PolicyPart { limit: p.limit, window: p.window }))
        .collect();
    serde_json::to_value(Doc {
        sessions: SessionsPart {
            max_per_user: s.max_per_user,
            idle_ttl: s.idle_ttl,
            max_lifetime: s.max_lifetime,
            on_limit: s.on_limit,
            idempotency_ttl: s.idempotency_ttl,
            max_idempotency_keys_per_user: s.max_idempotency_keys_per_user,
        },
        rate_limit: RateLimitPart { policies },
    })
    .expect("the runtime document always serialises")
}

/// RFC 7396: apply `patch` to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Drop empty objects left behind by removals, so the overrides stay sparse.
fn prune(v: &mut Value) {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            prune(child);
        }
        m.retain(|_, c| !matches!(c, Value::Object(o) if o.is_empty()));
    }
}

/// The file's configuration with `overrides` applied and validated.
pub fn apply(file: &Config, overrides: &Value) -> Result<Config, Vec<FieldError>> {
    let mut doc = document(file);
    merge_patch(&mut doc, overrides);
    let parsed = parse(doc)?;
    let mut config = file.clone();
    let s = &mut config.sessions;
    s.max_per_user = parsed.sessions.max_per_user;
    s.idle_ttl = parsed.sessions.idle_ttl;
    s.max_lifetime = parsed.sessions.max_lifetime;
    s.on_limit = parsed.sessions.on_limit;
    s.idempotency_ttl = parsed.sessions.idempotency_ttl;
    s.max_idempotency_keys_per_user = parsed.sessions.max_idempotency_keys_per_user;
    let mut errors = Vec::new();
    for (name, part) in &parsed.rate_limit.policies {
        match config.rate_limit.policies.iter_mut().find(|p| &p.name == name) {
            None => errors.push(FieldError {
                path: format!("rate_limit.policies.{name}"),
                message: "no policy of this name is configured (policies are added in the file)".into(),
            }),
            Some(p) => {
                p.limit = part.limit;
                match (p.kind, part.window) {
                    (PolicyKind::Concurrency, Some(_)) => errors.push(FieldError {
                        path: format!("rate_limit.policies.{name}.window"),
                        message: "a concurrency policy has no window".into(),
                    }),
                    (PolicyKind::Window, None) => errors.push(FieldError {
                        path: format!("rate_limit.policies.{name}.window"),
                        message: "a window policy needs a window".into(),
                    }),
                    (_, w) => p.window = w,
                }
            }
        }
    }
    if let Err(e) = config.validate() {
        errors.extend(e.0.into_iter().map(|line| {
            let (path, message) = line.split_once(": ").unwrap_or(("config", line.as_str()));
            FieldError { path: by_name(path, &config), message: message.to_string() }
        }));
    }
    if errors.is_empty() { Ok(config) } else { Err(errors) }
}

/// The overrides after `patch`, if the result is valid: `(overrides, effective)`.
pub fn patch(file: &Config, overrides: &Value, patch: &Value) -> Result<(Value, Config), Vec<FieldError>> {
    if !patch.is_object() {
        return Err(vec![FieldError { path: "body".into(), message: "a JSON Merge Patch object".into() }]);
    }
    let mut next = overrides.clone();
    merge_patch(&mut next, patch);
    prune(&mut next);
    if next.is_null() {
        next = json!({});
    }
    let effective = apply(file, &next)?;
    Ok((next, effective))
}

/// The file names policies by index (`rate_limit.policies[1].limit`); this
/// document, by name (`rate_limit.policies.reads.limit`).
fn by_name(path: &str, config: &Config) -> String {
    let named = path.strip_prefix("rate_limit.policies[").and_then(|rest| {
        let (index, field) = rest.split_once(']')?;
        let policy = config.rate_limit.policies.get(index.parse::<usize>().ok()?)?;
        Some(format!("rate_limit.policies.{}{field}", policy.name))
    });
    named.unwrap_or_else(|| path.to_string())
}

/// The document, part by part, so that each error names where it is
/// (`sessions.reaper_interval`, `rate_limit.policies.reads.limit`): serde's
/// own messages name a field but not its parents.
fn parse(mut doc: Value) -> Result<Doc, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(top) = doc.as_object_mut() else {
        return Err(vec![FieldError { path: "body".into(), message: "a JSON object".into() }]);
    };
    for key in top.keys().filter(|k| !matches!(k.as_str(), "sessions" | "rate_limit")) {
        errors.push(FieldError { path: key.clone(), message: "not a runtime setting".into() });
    }
    let sessions =
        part::<SessionsPart>(top.remove("sessions").unwrap_or(Value::Null), "sessions", &mut errors);
    let mut rate_limit = top.remove("rate_limit").unwrap_or(Value::Null);
    if let Some(rl) = rate_limit.as_object() {
        for key in rl.keys().filter(|k| k.as_str() != "policies") {
            errors.push(FieldError {
                path: format!("rate_limit.{key}"),
                message: "not a runtime setting".into(),
            });
        }
    }
    let mut policies = BTreeMap::new();
    match rate_limit.get_mut("policies").map(Value::take) {
        Some(Value::Object(named)) => {
            for (name, value) in named {
                let path = format!("rate_limit.policies.{name}");
                if let Some(p) = part::<PolicyPart>(value, &path, &mut errors) {
                    policies.insert(name, p);
                }
            }
        }
        _ => errors.push(FieldError {
            path: "rate_limit.policies".into(),
            message: "an object of policies by name".into(),
        }),
    }
    match sessions {
        Some(sessions) if errors.is_empty() => Ok(Doc { sessions, rate_limit: RateLimitPart { policies } }),
        _ => Err(errors),
    }
}

fn part<T: serde::de::DeserializeOwned>(value: Value, path: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    serde_json::from_value(value)
        .map_err(|e| {
            // "unknown field `x`, expected …", "missing field `x`": name it.
            let message = e.to_string();
            let path = match message.split('`').nth(1) {
                Some(field)
                    if message.starts_with("unknown field") || message.starts_with("missing field") =>
                {
                    format!("{path}.{field}")
                }
                _ => path.to_string(),
            };
            errors.push(FieldError { path, message });
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Config {
        Config::from_toml("[sessions]\nmax_per_user = 5").unwrap()
    }

    #[test]
    fn a_patch_overrides_and_null_restores() {
        let f = file();
        let (o, eff) = patch(&f, &json!({}), &json!({"sessions": {"max_per_user": 20}})).unwrap();
        assert_eq!(o, json!({"sessions": {"max_per_user": 20}}));
        assert_eq!(eff.sessions.max_per_user, 20);
        assert_eq!(document(&eff)["sessions"]["idle_ttl"], "30m");
        let (o, eff) = patch(&f, &o, &json!({"sessions": {"max_per_user": null}})).unwrap();
        assert_eq!(o, json!({}));
        assert_eq!(eff.sessions.max_per_user, 5, "the file's value is back");
    }

    #[test]
    fn policies_change_by_name() {
        let f = file();
        let (_, eff) = patch(
            &f,
            &json!({}),
            &json!({"rate_limit": {"policies": {"default": {"limit": 5, "window": "10s"}}}}),
        )
        .unwrap();
        let p = eff.rate_limit.policies.iter().find(|p| p.name == "default").unwrap();
        assert_eq!((p.limit, p.window), (5, Some(Duration::from_secs(10))));
    }

    #[test]
    fn invalid_changes_are_refused_with_the_field() {
        let f = file();
        let err = |p: Value| patch(&f, &json!({}), &p).unwrap_err();
        assert_eq!(err(json!({"sessions": {"max_per_user": 0}}))[0].path, "sessions.max_per_user");
        assert_eq!(err(json!({"sessions": {"reaper_interval": "1s"}}))[0].path, "sessions.reaper_interval");
        assert_eq!(err(json!({"server": {"listen": "0.0.0.0:1"}}))[0].path, "server");
        assert_eq!(
            err(json!({"rate_limit": {"policies": {"default": {"limit": 0}}}}))[0].path,
            "rate_limit.policies.default.limit"
        );
        assert_eq!(
            err(json!({"rate_limit": {"policies": {"nope": {"limit": 1}}}}))[0].path,
            "rate_limit.policies.nope"
        );
        assert_eq!(
            err(json!({"rate_limit": {"policies": {"queries-in-flight": {"limit": 2, "window": "1s"}}}}))[0]
                .path,
            "rate_limit.policies.queries-in-flight.window"
        );
        assert!(!err(json!({"sessions": {"idle_ttl": "soon"}})).is_empty());
    }
}
