//! The agent that answers queries, behind one trait.
//!
//! `echo` is deterministic (with optional simulated latency for load tests);
//! `http` POSTs the query to an upstream service.
//! The agent sees a query and its session context; it knows nothing of stores,
//! HTTP routing or how sessions are kept.

mod echo;
mod http;

pub use echo::EchoAgent;
pub use http::{HttpAgent, MAX_REPLY_BYTES};

use crate::config::{AgentConfig, AgentKind};
use async_trait::async_trait;
use std::sync::Arc;

/// What the agent is asked: the session context and the input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRequest {
    pub session_id: uuid::Uuid,
    pub user_id: Arc<str>,
    pub tool_set: Arc<str>,
    pub tools: Arc<[String]>,
    pub turn: u32,
    pub input: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReply {
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("agent failed: {0}")]
    Upstream(String),
}

impl AgentError {
    /// The `outcome` label of `sessiongate_agent_query_duration_seconds`.
    pub fn outcome(&self) -> &'static str {
        match self {
            AgentError::Timeout(_) => "timeout",
            AgentError::Upstream(_) => "error",
        }
    }
}

#[async_trait]
pub trait Agent: Send + Sync + 'static {
    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError>;
}

pub fn build(config: &AgentConfig) -> anyhow::Result<Arc<dyn Agent>> {
    Ok(match config.kind {
        AgentKind::Echo => Arc::new(EchoAgent::new(config.echo_latency)),
        AgentKind::Http => Arc::new(HttpAgent::new(&config.url, config.timeout)?),
    })
}
