//! sessiongate: agent sessions for authenticated frontend clients.
//!
//! # Layout
//!
//! - [`config`]: typed configuration, loading and validation; the runtime
//!   part's shape (`config::runtime`).
//! - [`clock`]: milliseconds since the epoch, injectable; RFC 3339 printing.
//! - [`json`]: JSON string literals for the hot paths.
//! - [`sessions`]: the pure lifecycle rules, the `SessionStore` trait and the
//!   service that orchestrates store, agent and events. No axum, no Redis.
//! - [`store`]: `SessionStore` backends (memory, Redis single node and
//!   Cluster) and where runtime overrides persist. No axum.
//! - [`agent`]: the `Agent` trait and its backends (echo, http).
//! - [`auth`]: JWT (HS256, RS256, PS256, ES256, EdDSA; PEM files, JWKS) and
//!   API keys, principals and roles, key and token hygiene. No sessions.
//! - [`ratelimit`]: sliding-window maths, limiter backends, policies, the IETF
//!   headers, the per-IP key. No sessions, no axum handlers.
//! - [`telemetry`]: the metrics catalog, domain events, logs and traces.
//! - [`http`]: the route table, router, handlers, extractors, middleware,
//!   problem+json, the OpenAPI document, serving connections.
//! - [`net`]: outbound HTTP clients (TLS set-up, timeouts).
//! - [`live_config`]: runtime config overrides, applied live, persisted and
//!   propagated between replicas.
//! - [`startup`]: the composition root (`Application::build`, `run_until_stopped`).
//! - [`cli`]: the command line.
//!
//! Request path, outermost first: envelope (request id, span, metrics,
//! problem rendering, access log) → timeout and body limit → CORS (when
//! configured) → in-flight bound, per-IP limit (`/v1` only) →
//! authentication → per-principal limits → admin gate → handler → service →
//! store / agent.

pub mod agent;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod json;
pub mod live_config;
pub mod net;
pub mod ratelimit;
pub mod sessions;
pub mod startup;
pub mod store;
pub mod telemetry;
