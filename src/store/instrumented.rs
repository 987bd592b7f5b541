//! A `SessionStore` decorator that times every operation and counts its
//! failures, whatever the backend: `sessiongate_store_operation_duration_seconds`
//! and `sessiongate_store_errors_total`, by backend and operation.

use crate::clock::Millis;
use crate::sessions::{
    Activity, CreateOutcome, CreateRequest, Limits, Session, SessionId, SessionStore, StoreError, StoreStats,
    Touched,
};
use crate::telemetry::Events;
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub struct Instrumented {
    inner: Arc<dyn SessionStore>,
    events: Arc<Events>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn SessionStore>, events: Arc<Events>) -> Self {
        Self { inner, events }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let backend = self.inner.backend();
        // A child span of the request's; background work (the reaper, stats)
        // would only make one-span traces, so it gets none.
        let result = if tracing::Span::current().is_disabled() {
            call.await
        } else {
            let span = tracing::info_span!(
                "store",
                otel.name = %format_args!("store.{operation}"),
                otel.kind = if backend == "redis" { "client" } else { "internal" },
                otel.status_code = tracing::field::Empty,
                db.system.name = if backend == "redis" { Some("redis") } else { None },
                db.operation.name = operation,
                sessiongate.store.backend = backend,
            );
            let result = call.instrument(span.clone()).await;
            if result.is_err() {
                span.record("otel.status_code", "ERROR");
            }
            result
        };
        self.events.store_operation(backend, operation, started.elapsed(), result.is_ok());
        result
    }
}

#[async_trait]
impl SessionStore for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn changes_finish_in_one_poll(&self) -> bool {
        self.inner.changes_finish_in_one_poll()
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateOutcome, StoreError> {
        self.timed("create", self.inner.create(req)).await
    }

    async fn get(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError> {
        self.timed("get", self.inner.get(user, id, now)).await
    }

    async fn list(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        self.timed("list", self.inner.list(user, now)).await
    }

    async fn touch(
        &self,
        user: &str,
        id: SessionId,
        activity: Activity,
        now: Millis,
        limits: &Limits,
    ) -> Result<Option<Touched>, StoreError> {
        self.timed("touch", self.inner.touch(user, id, activity, now, limits)).await
    }

    async fn delete(&self, user: &str, id: SessionId, now: Millis) -> Result<Option<Session>, StoreError> {
        self.timed("delete", self.inner.delete(user, id, now)).await
    }

    async fn revoke_user(&self, user: &str, now: Millis) -> Result<Vec<Session>, StoreError> {
        self.timed("revoke", self.inner.revoke_user(user, now)).await
    }

    async fn reap(&self, now: Millis, max: usize) -> Result<Vec<Session>, StoreError> {
        self.timed("reap", self.inner.reap(now, max)).await
    }

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError> {
        self.timed("stats", self.inner.stats(now)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }
}
