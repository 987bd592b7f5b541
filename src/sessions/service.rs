//! The session service: validates intent against the catalog, runs the
//! store's atomic steps, calls the agent, and reports every lifecycle event.
//!
//! Handlers call this and map its errors to responses; it knows no HTTP.

use super::model::{EndReason, Limits, Session, SessionId};
use super::store::{Activity, CreateOutcome, CreateRequest, IdempotencyRequest, SessionStore, StoreError};
use super::tool_sets::ToolSets;
use crate::agent::{Agent, AgentError, AgentRequest};
use crate::clock::{Clock, Millis};
use crate::telemetry::{Detached, Events, RequestContext};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Most sessions one reaper pass removes before yielding the shard locks.
const REAP_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no such session")]
    NotFound,
    #[error("unknown tool set")]
    UnknownToolSet { valid: Vec<Arc<str>> },
    #[error("session limit reached")]
    LimitReached { retry_after_ms: Millis, live: Vec<SessionId> },
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    #[error("too many idempotency keys held")]
    IdempotencyKeysExhausted { retry_after_ms: Millis, max: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("agent timed out after {0:?}")]
    AgentTimeout(Duration),
    #[error("agent failed: {0}")]
    Agent(String),
}

pub struct CreateInput {
    pub user: Arc<str>,
    pub tool_set: String,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Created {
    pub session: Session,
    pub evicted_ids: Vec<SessionId>,
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct QueryResult {
    pub session_id: SessionId,
    pub turn: u32,
    pub tool_set: Arc<str>,
    pub output: String,
    pub duration_ms: u64,
}

pub struct SessionService {
    store: Arc<dyn SessionStore>,
    agent: Arc<dyn Agent>,
    clock: Arc<dyn Clock>,
    tool_sets: ToolSets,
    limits: RwLock<Limits>,
    agent_timeout: Duration,
    events: Arc<Events>,
    /// Where store changes run to their end (`to_the_end`).
    detached: Detached,
}

pub struct ServiceParts {
    pub store: Arc<dyn SessionStore>,
    pub agent: Arc<dyn Agent>,
    pub clock: Arc<dyn Clock>,
    pub tool_sets: ToolSets,
    pub limits: Limits,
    pub agent_timeout: Duration,
    pub events: Arc<Events>,
    /// Where changes whose request is dropped still run to their end.
    pub detached: Detached,
}

impl SessionService {
    pub fn new(parts: ServiceParts) -> Self {
        Self {
            store: parts.store,
            agent: parts.agent,
            clock: parts.clock,
            tool_sets: parts.tool_sets,
            limits: RwLock::new(parts.limits),
            agent_timeout: parts.agent_timeout,
            events: parts.events,
            detached: parts.detached,
        }
    }

    pub fn tool_sets(&self) -> &ToolSets {
        &self.tool_sets
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read()
    }

    /// New limits from runtime config; sessions keep their expiry until their
    /// next activity recomputes it.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write() = limits;
    }

    pub fn store_backend(&self) -> &'static str {
        self.store.backend()
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Run a store change and the events it implies to their end, even when
    /// the request that asked for them is dropped meanwhile (its client went
    /// away and hyper dropped the handler): a remote store still applies a
    /// change whose caller stopped waiting for the reply, and every change
    /// must be counted once (a deleted session would otherwise never be: the
    /// reaper will not see it). A store whose changes finish within one poll
    /// runs them inline. The detached task keeps the request's span and
    /// context, so its log lines keep the request id.
    async fn to_the_end<T: Send + 'static>(
        &self,
        change: impl Future<Output = Result<T, ServiceError>> + Send + 'static,
    ) -> Result<T, ServiceError> {
        if self.store.changes_finish_in_one_poll() {
            return change.await;
        }
        self.detached
            .run(change)
            .await
            .unwrap_or_else(|| Err(StoreError::Unavailable("the server is shutting down".into()).into()))
    }

    fn tool_set(&self, name: &str) -> Result<Arc<str>, ServiceError> {
        self.tool_sets
            .get(name)
            .map(|t| t.name.clone())
            .ok_or_else(|| ServiceError::UnknownToolSet { valid: self.tool_sets.names() })
    }

    pub async fn create(&self, input: CreateInput) -> Result<Created, ServiceError> {
        let tool_set = self.tool_set(&input.tool_set)?;
        let now = self.now();
        let idempotency =
            input.idempotency_key.map(|key| IdempotencyRequest { key, fingerprint: fingerprint(&tool_set) });
        let limits = self.limits();
        let request = CreateRequest {
            id: uuid::Uuid::now_v7(),
            user_id: input.user,
            tool_set,
            now,
            limits,
            idempotency,
        };
        let (store, events) = (self.store.clone(), self.events.clone());
        let outcome = self
            .to_the_end(async move {
                let outcome = store.create(request).await?;
                match &outcome {
                    CreateOutcome::Created { session, evicted } => {
                        if !evicted.is_empty() {
                            events.session_limit_hit(true);
                        }
                        for s in evicted {
                            events.session_ended(s, EndReason::Evicted, now);
                        }
                        events.session_created(session);
                    }
                    CreateOutcome::LimitReached { .. } => events.session_limit_hit(false),
                    CreateOutcome::IdempotencyKeysExhausted { .. } => events.idempotency_keys_exhausted(),
                    _ => {}
                }
                Ok(outcome)
            })
            .await?;
        match outcome {
            CreateOutcome::Created { session, evicted } => {
                Ok(Created { session, evicted_ids: evicted.iter().map(|s| s.id).collect(), replayed: false })
            }
            CreateOutcome::Replayed { session, evicted_ids } => {
                Ok(Created { session, evicted_ids, replayed: true })
            }
            CreateOutcome::IdempotencyConflict => Err(ServiceError::IdempotencyConflict),
            CreateOutcome::IdempotencyKeysExhausted { retry_after_ms } => {
                Err(ServiceError::IdempotencyKeysExhausted {
                    retry_after_ms,
                    max: limits.max_idempotency_keys,
                })
            }
            CreateOutcome::LimitReached { retry_after_ms, live } => {
                Err(ServiceError::LimitReached { retry_after_ms, live })
            }
        }
    }

    pub async fn list(&self, user: &str) -> Result<Vec<Session>, ServiceError> {
        Ok(self.store.list(user, self.now()).await?)
    }

    pub async fn get(&self, user: &str, id: SessionId) -> Result<Session, ServiceError> {
        self.store.get(user, id, self.now()).await?.ok_or(ServiceError::NotFound)
    }

    pub async fn heartbeat(&self, user: &Arc<str>, id: SessionId) -> Result<Session, ServiceError> {
        let (store, events, user) = (self.store.clone(), self.events.clone(), user.clone());
        let (now, limits) = (self.now(), self.limits());
        self.to_the_end(async move {
            let touched = store
                .touch(&user, id, Activity::Heartbeat, now, &limits)
                .await?
                .ok_or(ServiceError::NotFound)?;
            events.heartbeat();
            Ok(touched.session)
        })
        .await
    }

    pub async fn migrate(
        &self,
        user: &Arc<str>,
        id: SessionId,
        tool_set: &str,
    ) -> Result<Session, ServiceError> {
        let tool_set = self.tool_set(tool_set)?;
        let (store, events, user) = (self.store.clone(), self.events.clone(), user.clone());
        let (now, limits) = (self.now(), self.limits());
        self.to_the_end(async move {
            let touched = store
                .touch(&user, id, Activity::Migrate { tool_set }, now, &limits)
                .await?
                .ok_or(ServiceError::NotFound)?;
            if touched.previous_tool_set != touched.session.tool_set {
                events.session_migrated(&touched.previous_tool_set, &touched.session.tool_set);
            }
            Ok(touched.session)
        })
        .await
    }

    /// Counts the turn first (atomically, so concurrent queries get distinct
    /// turn numbers), then asks the agent within its timeout.
    pub async fn query(&self, user: &str, id: SessionId, input: String) -> Result<QueryResult, ServiceError> {
        let touched = self
            .store
            .touch(user, id, Activity::Query, self.now(), &self.limits())
            .await?
            .ok_or(ServiceError::NotFound)?;
        let session = touched.session;
        let tools =
            self.tool_sets.get(&session.tool_set).map(|t| t.tools.clone()).unwrap_or_else(|| Arc::from([]));
        let request = AgentRequest {
            session_id: session.id,
            user_id: session.user_id.clone(),
            tool_set: session.tool_set.clone(),
            tools,
            turn: session.conversation_turns,
            input,
        };
        let started = Instant::now();
        let span = tracing::info_span!(
            "agent",
            otel.name = "agent.query",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            sessiongate.tool_set = &*session.tool_set,
            sessiongate.turn = i64::from(session.conversation_turns),
        );
        let bound = self.agent_bound(started);
        let call = tokio::time::timeout(bound, self.agent.run(request));
        let result = match call.instrument(span.clone()).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Timeout(bound)),
        };
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        let elapsed = started.elapsed();
        let outcome = result.as_ref().map_or_else(|e| e.outcome(), |_| "ok");
        self.events.agent_query(&session.tool_set, outcome, elapsed);
        match result {
            Ok(reply) => Ok(QueryResult {
                session_id: session.id,
                turn: session.conversation_turns,
                tool_set: session.tool_set,
                output: reply.output,
                duration_ms: elapsed.as_millis() as u64,
            }),
            Err(AgentError::Timeout(d)) => Err(ServiceError::AgentTimeout(d)),
            Err(AgentError::Upstream(msg)) => Err(ServiceError::Agent(msg)),
        }
    }

    /// The agent call's bound: `agent.timeout`, and never past the request's
    /// own deadline, less a twentieth of what is left (at least 10 ms) to
    /// answer in. The call starts after the request did, so with equal
    /// timeouts (both default to 30 s) the request's would always fire
    /// first: a hung agent would be a `408` with no agent timeout counted,
    /// unseen by the 5xx alerts. Bounded so, it is this query's `504`.
    fn agent_bound(&self, now: Instant) -> Duration {
        let deadline = RequestContext::with_current(|c| c.and_then(|c| c.deadline.get()));
        match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(now);
                let margin = (left / 20).max(Duration::from_millis(10));
                self.agent_timeout.min(left.saturating_sub(margin))
            }
            None => self.agent_timeout,
        }
    }

    pub async fn delete(&self, user: &Arc<str>, id: SessionId) -> Result<(), ServiceError> {
        let (store, events, user) = (self.store.clone(), self.events.clone(), user.clone());
        let now = self.now();
        self.to_the_end(async move {
            let session = store.delete(&user, id, now).await?.ok_or(ServiceError::NotFound)?;
            events.session_ended(&session, EndReason::Deleted, now);
            Ok(())
        })
        .await
    }

    /// The admin lever: end all of a user's sessions; returns how many.
    pub async fn revoke_user(&self, user: &str) -> Result<Vec<Session>, ServiceError> {
        let (store, events, user) = (self.store.clone(), self.events.clone(), Arc::<str>::from(user));
        let now = self.now();
        self.to_the_end(async move {
            let ended = store.revoke_user(&user, now).await?;
            for s in &ended {
                events.session_ended(s, EndReason::Revoked, now);
            }
            Ok(ended)
        })
        .await
    }

    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.store.ping().await?)
    }

    /// One reaper sweep: remove what expired, count each once, refresh gauges.
    pub async fn reap_once(&self) -> Result<usize, ServiceError> {
        let now = self.now();
        let mut removed = 0;
        loop {
            let batch = self.store.reap(now, REAP_BATCH).await?;
            removed += batch.len();
            let full = batch.len() >= REAP_BATCH;
            self.events.reaper_swept_sessions(&batch);
            if !full {
                break;
            }
        }
        let stats = self.store.stats(now).await?;
        let active: Vec<(Arc<str>, u64)> = stats.active_by_tool_set.into_iter().collect();
        self.events.reaper_finished(removed, &active, &self.tool_sets.names(), stats.expired_pending, now);
        Ok(removed)
    }

    /// Sweep every `interval` until `shutdown` fires.
    pub async fn run_reaper(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    if let Err(e) = self.reap_once().await {
                        tracing::warn!(error = %e, "reaper sweep failed; will retry");
                    }
                }
            }
        }
    }
}

/// What identifies a create request's content for idempotency.
fn fingerprint(tool_set: &str) -> String {
    hex::encode(Sha256::digest(format!("POST /v1/sessions\ntool_set={tool_set}")))
}
