//! The deterministic agent: answers with what it was asked, after an optional
//! simulated delay. The default, and what load tests drive.

use super::{Agent, AgentError, AgentReply, AgentRequest};
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EchoAgent {
    latency: Duration,
}

impl EchoAgent {
    pub fn new(latency: Duration) -> Self {
        Self { latency }
    }
}

#[async_trait]
impl Agent for EchoAgent {
    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(AgentReply {
            output: format!(
                "[{} turn {} via {}] {}",
                request.tool_set,
                request.turn,
                request.tools.join(","),
                request.input
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn echoes_deterministically_after_its_latency() {
        let agent = EchoAgent::new(Duration::from_millis(250));
        let req = AgentRequest {
            session_id: uuid::Uuid::nil(),
            user_id: Arc::from("alice"),
            tool_set: Arc::from("general"),
            tools: Arc::from(vec!["search".to_string()]),
            turn: 2,
            input: "hi".into(),
        };
        let start = tokio::time::Instant::now();
        let reply = agent.run(req.clone()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(reply.output, "[general turn 2 via search] hi");
        assert_eq!(agent.run(req).await.unwrap(), reply);
    }
}
