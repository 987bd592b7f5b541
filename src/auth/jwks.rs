//! A JWKS fetched from one pinned URL, cached by `kid`.
//!
//! - Refreshed every `jwks_refresh`, sooner when the response's
//!   `Cache-Control: max-age` says so (never sooner than the cooldown).
//! - An unknown `kid` triggers one refetch shared by every request waiting
//!   for it (single-flight: they queue on one lock and re-check after it).
//! - No two fetches of any kind are closer than `jwks_cooldown`; an unknown
//!   `kid` inside the cooldown is answered at once, without waiting.
//! - A failed fetch keeps the last good keys; it is logged and counted.
//!
//! It never fetches anything a token names (`jku`, `x5u`).

use super::keys::VerifyingKey;
use crate::telemetry::Events;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
// Tokio's clock, not std's: tests pause and advance it instead of sleeping.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Largest JWKS body accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct KeyCache {
    pub keys: Vec<Arc<VerifyingKey>>,
}

impl KeyCache {
    pub fn find(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

pub struct Jwks {
    url: String,
    client: reqwest::Client,
    cache: ArcSwap<KeyCache>,
    /// Held for the whole of a fetch: the single flight.
    flight: tokio::sync::Mutex<()>,
    /// When the last fetch ended, in ms since `origin`; 0 = never.
    last_fetch_ms: AtomicU64,
    /// The refresh delay the last response asked for, in ms.
    next_refresh_ms: AtomicU64,
    origin: Instant,
    refresh: Duration,
    cooldown: Duration,
    events: Arc<Events>,
    /// The keys the last good fetch left out (`kid`, reason): each is
    /// reported once while it stays in the set, not at every refresh.
    skipped: parking_lot::Mutex<Vec<(Option<String>, &'static str)>>,
}

impl Jwks {
    pub fn new(url: String, refresh: Duration, cooldown: Duration, events: Arc<Events>) -> Self {
        Self {
            url,
            client: crate::net::client(Duration::from_secs(5)),
            cache: ArcSwap::from_pointee(KeyCache::default()),
            flight: tokio::sync::Mutex::new(()),
            last_fetch_ms: AtomicU64::new(0),
            next_refresh_ms: AtomicU64::new(refresh.as_millis() as u64),
            origin: Instant::now(),
            refresh,
            cooldown,
            events,
            skipped: Default::default(),
        }
    }

    /// The keys as last fetched.
    pub fn current(&self) -> Arc<KeyCache> {
        self.cache.load_full()
    }

    fn within_cooldown(&self) -> bool {
        match self.last_fetch_ms.load(Ordering::Acquire) {
            0 => false,
            at => {
                (self.origin.elapsed().as_millis() as u64).saturating_sub(at)
                    < self.cooldown.as_millis() as u64
            }
        }
    }

    /// A token named `kid` and no cached key has it: fetch again unless a
    /// fetch just happened. True when the key is known afterwards.
    pub async fn refetch_for(&self, kid: &str) -> bool {
        let guard = match self.flight.try_lock() {
            Ok(g) if self.within_cooldown() => {
                drop(g);
                return false;
            }
            Ok(g) => g,
            // A fetch is in flight: wait for it, then look again.
            Err(_) => self.flight.lock().await,
        };
        if self.current().find(kid).is_some() {
            return true;
        }
        if self.within_cooldown() {
            return false;
        }
        let _ = self.fetch_locked().await;
        drop(guard);
        self.current().find(kid).is_some()
    }

    /// Fetch now unless within the cooldown; used at start-up and by the refresher.
    pub async fn refresh(&self) -> Result<(), String> {
        let _guard = self.flight.lock().await;
        if self.within_cooldown() {
            return Ok(());
        }
        self.fetch_locked().await
    }

    /// One fetch; the caller holds `flight`.
    async fn fetch_locked(&self) -> Result<(), String> {
        let result = self.fetch_once().await;
        self.last_fetch_ms.store((self.origin.elapsed().as_millis() as u64).max(1), Ordering::Release);
        match result {
            Ok((cache, max_age)) => {
                let n = cache.keys.len();
                self.cache.store(Arc::new(cache));
                let next = max_age.unwrap_or(self.refresh).clamp(self.cooldown, self.refresh);
                self.next_refresh_ms.store(next.as_millis() as u64, Ordering::Relaxed);
                self.events.jwks_refreshed(Ok(n));
                Ok(())
            }
            Err(e) => {
                // Keep the last good keys; try again after the cooldown.
                self.next_refresh_ms.store(self.cooldown.as_millis() as u64, Ordering::Relaxed);
                self.events.jwks_refreshed(Err(&e));
                Err(e)
            }
        }
    }

    async fn fetch_once(&self) -> Result<(KeyCache, Option<Duration>), String> {
        let response = self.client.get(&self.url).send().await.map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered HTTP {}", response.status().as_u16()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
        }
        // Bounded while it streams in: a body without a Content-Length (or
        // with a false one) is cut off at the bound, not read whole first.
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading the body failed: {e}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &set.keys {
            match VerifyingKey::from_jwk(jwk) {
                Ok(k) => keys.push(Arc::new(k)),
                Err(why) => {
                    let kid = jwk.common.key_id.clone();
                    if !self.skipped.lock().contains(&(kid.clone(), why.reason)) {
                        self.events.jwks_key_skipped(kid.as_deref(), &why);
                    }
                    skipped.push((kid, why.reason));
                }
            }
        }
        *self.skipped.lock() = skipped;
        if keys.is_empty() {
            // An empty (or wholly unusable) set would lock everyone out: keep the last good keys.
            return Err(format!("no usable keys among {}", set.keys.len()));
        }
        Ok((KeyCache { keys }, max_age))
    }

    /// Refresh in the background until `shutdown`.
    pub async fn run_refresher(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wait = Duration::from_millis(self.next_refresh_ms.load(Ordering::Relaxed));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => { let _ = self.refresh().await; }
            }
        }
    }
}

/// `max-age=N` from a Cache-Control value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let d = d.trim();
        d.strip_prefix("max-age=")
            .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {

    #[tokio::test(start_paused = true)]
    async fn the_cooldown_runs_on_tokios_clock() {
        let events = Arc::new(Events::new(Arc::new(crate::telemetry::metrics::Metrics::new())));
        let jwks = Jwks::new(
            "https://idp.test/jwks".into(),
            Duration::from_secs(300),
            Duration::from_secs(30),
            events,
        );
        assert!(!jwks.within_cooldown(), "no fetch yet");
        tokio::time::advance(Duration::from_secs(5)).await;
        jwks.last_fetch_ms.store(jwks.origin.elapsed().as_millis() as u64, Ordering::Release);
        assert!(jwks.within_cooldown());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(jwks.within_cooldown(), "29 s after the fetch");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!jwks.within_cooldown(), "30 s after it");
    }

    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(max_age("no-cache"), None);
    }
}
