//! Runtime configuration, live: the file's values with saved overrides over
//! them, applied to the session service and the rate limiter, persisted by an
//! `OverridesStore`, and — when that store is shared (Redis) — picked up from
//! other replicas within a second (polled every 500 ms).

use crate::config::Config;
use crate::config::runtime::{self, FieldError};
use crate::ratelimit::{self, RateLimiter};
use crate::sessions::{Limits, SessionService, StoreError};
use crate::store::overrides::{OverridesStore, Saved};
use crate::telemetry::{Detached, Events};
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
    /// Where a PATCH runs to its end, even if its request is dropped.
    detached: Detached,
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
        detached: Detached,
    ) -> anyhow::Result<Arc<Self>> {
        let current =
            Current { version: 0, overrides: Value::Object(Default::default()), effective: file.clone() };
        let this = Arc::new(Self {
            file,
            store,
            current: tokio::sync::Mutex::new(current),
            detached,
            service,
            limiter,
            events,
            routes,
        });
        match this.store.load().await {
            Ok(saved) if saved.version > 0 => {
                let mut current = this.current.lock().await;
                this.follow(&mut current, saved, "startup");
            }
            Ok(_) => {}
            // A local file that does not parse is the operator's to mend:
            // serving without it would also refuse every PATCH (each reads it).
            Err(e @ StoreError::Internal(_)) if !this.store.shared() => {
                anyhow::bail!(
                    "store.overrides_file: {e} (mend it, or remove it to start from the file's values)"
                )
            }
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
    /// retried after reloading. It runs in a task of its own: once saved, a
    /// change is applied and counted (as `api`, with its admin) here too,
    /// even if the request that made it is dropped (timeout, disconnect).
    pub async fn patch(self: &Arc<Self>, admin: &str, patch: &Value) -> Result<Value, PatchError> {
        let (this, admin, patch) = (self.clone(), admin.to_string(), patch.clone());
        // With the request's context, so its audit line keeps the request id.
        let run = async move { this.patch_here(&admin, &patch).await };
        self.detached.run(run).await.unwrap_or_else(|| {
            Err(PatchError::Store(StoreError::Unavailable("the server is shutting down".into())))
        })
    }

    async fn patch_here(&self, admin: &str, patch: &Value) -> Result<Value, PatchError> {
        for _ in 0..5 {
            // Under the lock from the load to the save: what is loaded is
            // what the store holds now, so no PATCH here can interleave.
            let mut current = self.current.lock().await;
            let latest = self.store.load().await?;
            self.follow(&mut current, latest, "replica");
            let (overrides, effective) =
                runtime::patch(&self.file, &current.overrides, patch).map_err(PatchError::Invalid)?;
            if overrides == current.overrides {
                // Nothing changes: nothing to save, apply or count.
                return Ok(runtime::document(&current.effective));
            }
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

    /// Follow the store: it holds the truth. `saved` must have been loaded
    /// under the lock `current` comes from, or be newer than `current`, so
    /// that a load racing a local PATCH cannot undo it. A version lower than
    /// ours means the store lost or replaced what it held (a Redis flushed or
    /// failed over, a file removed): every replica follows it back, rather
    /// than each keeping its own and refusing every PATCH.
    fn follow(&self, current: &mut Current, saved: Saved, source: &'static str) {
        let Saved { version, overrides } = saved;
        if version == current.version && overrides == current.overrides {
            return;
        }
        if version < current.version {
            tracing::warn!(
                from = current.version,
                to = version,
                "the saved runtime config went back a version (the store lost or replaced it); following it"
            );
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
                    // A load outside the lock, to see whether anything changed;
                    // if so, a load under it (no PATCH here can be halfway
                    // then) says what the store holds now: a load that raced
                    // a PATCH, or a reset, must not be applied as it was.
                    let Ok(saved) = self.store.load().await else { continue };
                    let mut current = self.current.lock().await;
                    let differs = saved.version != current.version || saved.overrides != current.overrides;
                    if differs && let Ok(now) = self.store.load().await {
                        self.follow(&mut current, now, "replica");
                    }
                }
            }
        }
    }
}
