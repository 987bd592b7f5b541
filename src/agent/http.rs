//! The `http` agent: POSTs the query with its session context to a configured
//! URL and reads back `{"output": "…"}`.
//!
//! Request body: `{session_id, user_id, tool_set, tools, turn, input}`, with a
//! W3C `traceparent` (and `tracestate`) so the upstream joins the request's
//! trace. Any non-2xx answer, unreadable body, refused connection or answer
//! over `MAX_REPLY_BYTES` is an upstream error (502 to the client); no answer
//! within the timeout is a timeout (504). Redirects are never followed. The
//! upstream's own words never reach the client (they go to the log).

use super::{Agent, AgentError, AgentReply, AgentRequest};
use crate::telemetry::trace_context;
use async_trait::async_trait;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A larger answer is refused rather than buffered.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

pub struct HttpAgent {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

#[derive(serde::Deserialize)]
struct Reply {
    output: String,
}

impl HttpAgent {
    /// `url` was validated with the configuration.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)?;
        Ok(Self { client: crate::net::client(timeout), url, timeout })
    }

    fn upstream(&self, what: impl std::fmt::Display) -> AgentError {
        AgentError::Upstream(format!("{}: {what}", self.url))
    }
}

#[async_trait]
impl Agent for HttpAgent {
    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        let span = tracing::Span::current();
        span.set_attribute("http.request.method", "POST");
        span.set_attribute("url.full", self.url.to_string());
        if let Some(host) = self.url.host_str() {
            span.set_attribute("server.address", host.to_string());
        }
        if let Some(port) = self.url.port_or_known_default() {
            span.set_attribute("server.port", i64::from(port));
        }

        let mut headers = http::HeaderMap::new();
        trace_context::inject_current(&mut headers);
        let sent = self.client.post(self.url.clone()).headers(headers).json(&request).send().await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(AgentError::Timeout(self.timeout)),
            Err(e) => {
                span.set_attribute("error.type", "connect");
                return Err(self.upstream(error_chain(&e)));
            }
        };
        let status = response.status();
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if !status.is_success() {
            span.set_attribute("error.type", status.as_str().to_string());
            return Err(self.upstream(format_args!("answered {status}")));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_REPLY_BYTES {
                        return Err(self.upstream(format_args!("answer larger than {MAX_REPLY_BYTES} bytes")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(AgentError::Timeout(self.timeout)),
                Err(e) => return Err(self.upstream(error_chain(&e))),
            }
        }
        match serde_json::from_slice::<Reply>(&body) {
            Ok(reply) => Ok(AgentReply { output: reply.output }),
            Err(e) => Err(self.upstream(format_args!("answer is not {{\"output\": string}}: {e}"))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
