//! Agent sessions: the pure lifecycle rules, the storage trait, and the service
//! that orchestrates store, agent and events.
//!
//! Nothing here knows about axum or Redis: the HTTP layer calls the service,
//! and the storage backends implement `SessionStore`.

pub mod lifecycle;
pub mod model;
mod service;
mod store;
mod tool_sets;

pub use model::{EndReason, Limits, Session, SessionId};
pub use service::{CreateInput, Created, QueryResult, ServiceError, ServiceParts, SessionService};
pub use store::{
    Activity, CreateOutcome, CreateRequest, IdempotencyRequest, SessionStore, StoreError, StoreStats, Touched,
};
pub use tool_sets::{ToolSet, ToolSets};
