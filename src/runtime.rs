//! Runtime configuration, live: the file's values with saved overrides over
//! them, applied to the session service and the rate limiter, persisted by an
//! `OverridesStore`, and — when that store is shared (Redis) — picked up from
//! other replicas within a second (polled every 500 ms).

use crate::config::Config;
use crate::config::runtime::{self, FieldError};
use crate::ratelimit::{self, RateLimiter};
use crate::sessions::{Limits, SessionService, StoreError};
use crate::store::overrides::OverridesStore;
use crate::telemetry::Events;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid configuration change")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Current {
    version: u64,
    overrides: Value,
    effective: Config,
}

pub struct RuntimeConfig {
    file: Config,
    store: Arc<dyn OverridesStore>,
    /// Held across a PATCH's save so two PATCHes here cannot interleave.
    current: tokio::sync::Mutex<Current>,
    service: Arc<SessionService>,
    limiter: Arc<RateLimiter>,
    events: Arc<Events>,
    routes: &'static [&'static str],
}

impl RuntimeConfig {
    /// Load saved overrides (they win over the file) and apply them.
    pub async fn start(
        file: Config,
        store: Arc<dyn OverridesStore>,
        service: Arc<SessionService>,
        limiter: Arc<RateLimiter>,
        events: Arc<Events>,
        routes: &'static [&'static str],
    ) -> anyhow::Result<Arc<Self>> {
        let current =
            Current { version: 0, overrides: Value::Object(Default::default()), effective: file.clone() };
        let this = Arc::new(Self {
            file,
            store,
            current: tokio::sync::Mutex::new(current),
            service,
            limiter,
            events,
            routes,
        });
        match this.store.load().await {
            Ok(saved) if saved.version > 0 => this.adopt(saved.version, saved.overrides, "startup").await,
            Ok(_) => {}
            // A Redis that is down at start-up: the file's values serve until it answers.
            Err(e) => {
                tracing::warn!(error = %e, "saved runtime config unreachable at start-up; using the file's values")
            }
        }
        Ok(this)
    }

    /// The effective runtime document.
    pub async fn document(&self) -> Value {
        runtime::document(&self.current.lock().await.effective)
    }

    /// Apply an RFC 7396 merge patch from `admin`: validated, saved, applied.
    /// The patch goes on top of the latest saved overrides (another replica's
    /// change is never lost): the save is a compare-and-set on the version,
    /// retried after reloading.
    pub async fn patch(&self, admin: &str, patch: &Value) -> Result<Value, PatchError> {
        for _ in 0..5 {
            let latest = self.store.load().await?;
            self.adopt(latest.version, latest.overrides, "replica").await;
            let mut current = self.current.lock().await;
            let (overrides, effective) =
                runtime::patch(&self.file, &current.overrides, patch).map_err(PatchError::Invalid)?;
            let policies = ratelimit::policies(&effective.rate_limit, self.routes).map_err(|e| {
                PatchError::Invalid(vec![FieldError { path: "rate_limit".into(), message: e.to_string() }])
            })?;
            let Some(version) = self.store.save(&overrides, current.version).await? else {
                continue; // someone saved meanwhile: reload and try again
            };
            self.apply(&effective, policies);
            *current = Current { version, overrides, effective };
            self.events.config_changed("api", Some(admin), patch);
            return Ok(runtime::document(&current.effective));
        }
        Err(PatchError::Store(StoreError::Unavailable(
            "runtime config kept changing under this PATCH".into(),
        )))
    }

    /// Take saved overrides from elsewhere (start-up, another replica).
    async fn adopt(&self, version: u64, overrides: Value, source: &'static str) {
        let mut current = self.current.lock().await;
        // Only forward: a load that raced a local PATCH must not undo it.
        if version <= current.version {
            return;
        }
        let applied = runtime::apply(&self.file, &overrides).map_err(|errors| {
            errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; ")
        });
        match applied.and_then(|eff| {
            ratelimit::policies(&eff.rate_limit, self.routes).map(|p| (eff, p)).map_err(|e| e.to_string())
        }) {
            Ok((effective, policies)) => {
                self.apply(&effective, policies);
                self.events.config_changed(source, None, &overrides);
                *current = Current { version, overrides, effective };
            }
            Err(why) => {
                // Keep serving what we have. Remember the version, so it is
                // reported once, and the overrides, so the next PATCH goes on
                // top of them: it is refused (422, naming what no longer fits)
                // until it sets that right, instead of quietly saving over
                // every other saved override.
                tracing::error!(version, %why, "saved runtime config does not fit this configuration file; not applied");
                current.version = version;
                current.overrides = overrides;
            }
        }
    }

    fn apply(&self, effective: &Config, policies: Vec<ratelimit::Policy>) {
        self.service.set_limits(Limits::from(&effective.sessions));
        self.limiter.set_policies(policies);
    }

    /// With a shared store, look for other replicas' changes every `every`.
    pub async fn run_watcher(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        if !self.store.shared() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Ok(saved) = self.store.load().await
                        && saved.version > self.current.lock().await.version
                    {
                        self.adopt(saved.version, saved.overrides, "replica").await;
                    }
                }
            }
        }
    }
}
