//! Traces, end to end: the real binary exports over OTLP (gRPC and
//! HTTP/protobuf) to a receiver running in this test (opentelemetry-proto's
//! server side), configured only by `OTEL_*` variables; the `http` agent's
//! upstream is a test server that records the `traceparent` it was sent; the
//! process's JSON log lines are read back and joined to the spans.

use crate::helpers::*;
use crate::process::SgProcess;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

/// A received span with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Got {
    span: Span,
    service: String,
}

impl Got {
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    fn attr(&self, key: &str) -> Option<Any> {
        self.span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
    }
    fn str_attr(&self, key: &str) -> Option<String> {
        match self.attr(key) {
            Some(Any::StringValue(s)) => Some(s),
            _ => None,
        }
    }
    fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Any::IntValue(i)) => Some(i),
            _ => None,
        }
    }
    fn is_error(&self) -> bool {
        self.span.status.as_ref().is_some_and(|s| s.code == STATUS_ERROR)
    }
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Got>>>);

impl Received {
    fn push(&self, req: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.clone()?.value {
                    Some(Any::StringValue(s)) => Some(s),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push(Got { span, service: service.clone() });
                }
            }
        }
    }

    fn all(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    /// Wait until a span satisfies `pred`.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Got) -> bool) -> Got {
        for _ in 0..200 {
            if let Some(g) = self.all().into_iter().find(&pred) {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no span {what} arrived; got {:#?}",
            self.all().iter().map(|g| &g.span.name).collect::<Vec<_>>()
        );
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// An OTLP/gRPC receiver on a free port; its endpoint URL.
async fn grpc_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a free port.
async fn http_receiver(received: Received) -> String {
    async fn traces(State(r): State<Received>, headers: HeaderMap, body: Bytes) -> (StatusCode, Vec<u8>) {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                r.push(req);
                (StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
            }
            Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
        }
    }
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The agent's upstream: `/ok` answers, `/fail` answers 500; both record the
/// `traceparent` they were sent.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |seen: Arc<Mutex<Vec<String>>>, headers: &HeaderMap| {
        seen.lock()
            .unwrap()
            .push(headers.get("traceparent").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default());
    };
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| async move {
                record(s1, &headers);
                axum::Json(json!({"output": format!("upstream saw turn {}", body["turn"])}))
            }),
        )
        .route(
            "/fail",
            axum::routing::post(move |headers: HeaderMap| async move {
                record(s2, &headers);
                (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_A: &str = "00f067aa0ba902b7";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_B: &str = "b7ad6b7169203331";
const TRACE_C: &str = "11111111111111112222222222222222";

fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

#[tokio::test]
async fn spans_reach_an_otlp_grpc_receiver_with_the_callers_trace_continued() {
    let received = Received::default();
    let endpoint = grpc_receiver(received.clone()).await;
    let (agent, seen) = upstream().await;
    let agent_ok = format!("{agent}/ok");
    let proc = SgProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("SESSIONGATE__AGENT__KIND", "http"),
        ("SESSIONGATE__AGENT__URL", &agent_ok),
    ]);
    let c = client();
    let alice = token("alice");

    // Create, inside the caller's trace A.
    let created = c
        .post(proc.url("/v1/sessions"))
        .bearer_auth(&alice)
        .header("traceparent", traceparent(TRACE_A, PARENT_A))
        .header("tracestate", "vendor=abc")
        .json(&json!({"tool_set": "general"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let create_request_id = created.headers()["x-request-id"].to_str().unwrap().to_string();
    let session: Value = created.json().await.unwrap();
    let id = session["id"].as_str().unwrap().to_string();

    // Query, inside trace B: the agent's upstream joins it.
    let queried = c
        .post(proc.url(&format!("/v1/sessions/{id}/queries")))
        .bearer_auth(&alice)
        .header("traceparent", traceparent(TRACE_B, PARENT_B))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(queried.status(), StatusCode::OK);
    assert_eq!(queried.json::<Value>().await.unwrap()["output"], "upstream saw turn 1");

    // No traceparent, and a 401: still traced, in a new trace.
    let denied = c.get(proc.url("/v1/sessions")).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let denied_trace = denied.json::<Value>().await.unwrap()["trace_id"].as_str().unwrap().to_string();
    assert_eq!(denied_trace.len(), 32);

    // The create: a SERVER span in trace A, child of the caller's span.
    let server = received
        .wait_for("POST /v1/sessions", |g| g.span.name == "POST /v1/sessions" && g.trace_id() == TRACE_A)
        .await;
    assert_eq!(server.span.kind, KIND_SERVER);
    assert_eq!(server.parent(), PARENT_A);
    assert_eq!(server.span.trace_state, "vendor=abc");
    assert_eq!(server.service, "sessiongate");
    assert_eq!(server.str_attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(server.str_attr("http.route").as_deref(), Some("/v1/sessions"));
    assert_eq!(server.str_attr("url.path").as_deref(), Some("/v1/sessions"));
    assert_eq!(server.str_attr("url.scheme").as_deref(), Some("http"));
    assert_eq!(server.str_attr("network.protocol.version").as_deref(), Some("1.1"));
    assert_eq!(server.int_attr("http.response.status_code"), Some(201), "an integer attribute");
    assert!(!server.is_error());
    // Its direct children: the rate-limit check and the store's create.
    let limit = received
        .wait_for("ratelimit.check", |g| g.span.name == "ratelimit.check" && g.trace_id() == TRACE_A)
        .await;
    assert_eq!(limit.parent(), server.span_id());
    assert_eq!(limit.span.kind, KIND_INTERNAL);
    assert_eq!(limit.str_attr("ratelimit.decision").as_deref(), Some("admitted"));
    let store = received.wait_for("store.create", |g| g.span.name == "store.create").await;
    assert_eq!((store.trace_id(), store.parent()), (TRACE_A.to_string(), server.span_id()));
    assert_eq!(store.str_attr("db.operation.name").as_deref(), Some("create"));

    // The query: the agent's CLIENT span is a direct child, and the upstream
    // was sent a traceparent naming that span in trace B.
    let query = received
        .wait_for("query", |g| g.span.name == "POST /v1/sessions/{id}/queries" && g.trace_id() == TRACE_B)
        .await;
    assert_eq!(query.parent(), PARENT_B);
    assert_eq!(query.str_attr("http.route").as_deref(), Some("/v1/sessions/{id}/queries"));
    let agent_span = received.wait_for("agent.query", |g| g.span.name == "agent.query").await;
    assert_eq!(agent_span.span.kind, KIND_CLIENT);
    assert_eq!((agent_span.trace_id(), agent_span.parent()), (TRACE_B.to_string(), query.span_id()));
    assert_eq!(agent_span.int_attr("http.response.status_code"), Some(200));
    assert_eq!(agent_span.str_attr("url.full").as_deref(), Some(agent_ok.as_str()));
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent, vec![format!("00-{TRACE_B}-{}-01", agent_span.span_id())]);

    // The 401 is a server span of its own trace, named by its route.
    let unauth = received.wait_for("401", |g| g.trace_id() == denied_trace).await;
    assert_eq!(unauth.span.name, "GET /v1/sessions");
    assert_eq!(unauth.int_attr("http.response.status_code"), Some(401));
    assert!(unauth.span.parent_span_id.is_empty(), "a root span");

    // Logs: every line is JSON; the create's access line carries the ids of
    // its server span and its request id.
    let logs = proc.log_lines();
    let access = logs
        .iter()
        .find(|l| l["message"] == "request" && l["request_id"] == create_request_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {create_request_id}: {logs:#?}"));
    assert_eq!(access["trace_id"], TRACE_A);
    assert_eq!(access["span_id"], server.span_id());
    assert_eq!(access["http.route"], "/v1/sessions");
    assert_eq!(access["http.response.status_code"], 201);
    assert_eq!(access["principal"], "user");
    assert!(access["duration_ms"].is_number());
    // Tokens never reach the log.
    assert!(!proc.raw_lines().iter().any(|l| l.contains(&alice)));
}

#[tokio::test]
async fn an_upstream_failure_is_a_502_with_an_error_span_and_spans_flush_on_shutdown_over_http() {
    let received = Received::default();
    let endpoint = http_receiver(received.clone()).await;
    let (agent, seen) = upstream().await;
    let agent_fail = format!("{agent}/fail");
    // A batch delay of ten minutes: the spans can only arrive through the
    // flush at shutdown, however slow the machine.
    let mut proc = SgProcess::start(&[
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "gate-under-test"),
        ("SESSIONGATE__AGENT__KIND", "http"),
        ("SESSIONGATE__AGENT__URL", &agent_fail),
    ]);
    let c = client();
    let alice = token("alice");
    let session: Value = c
        .post(proc.url("/v1/sessions"))
        .bearer_auth(&alice)
        .json(&json!({"tool_set": "general"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap();
    let failed = c
        .post(proc.url(&format!("/v1/sessions/{id}/queries")))
        .bearer_auth(&alice)
        .header("traceparent", traceparent(TRACE_C, PARENT_A))
        .json(&json!({"input": "boom"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(failed, StatusCode::BAD_GATEWAY, "UPSTREAM_ERROR").await;
    assert_eq!(problem["trace_id"], TRACE_C);
    assert!(!problem.to_string().contains("exploded"), "the upstream's words stay out of the answer");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let stopping = std::time::Instant::now();
    proc.terminate().await;
    // The process has exited: whatever it exported is here already.
    let all = received.all();
    let server = all
        .iter()
        .find(|g| g.trace_id() == TRACE_C && g.span.kind == KIND_SERVER)
        .unwrap_or_else(|| {
            panic!(
                "the 502 span was not flushed at shutdown ({:?}): {all:#?} {:#?}",
                stopping.elapsed(),
                proc.log_lines()
            )
        })
        .clone();
    assert_eq!(server.service, "gate-under-test");
    assert_eq!(server.int_attr("http.response.status_code"), Some(502));
    assert!(server.is_error(), "a 5xx is an error span");
    assert_eq!(server.str_attr("error.type").as_deref(), Some("502"));
    let agent_span = all.iter().find(|g| g.span.name == "agent.query").expect("agent span flushed");
    assert!(agent_span.is_error());
    assert_eq!(agent_span.parent(), server.span_id());

    // The failure is logged once, with the upstream's cause and the trace id.
    let logs = proc.log_lines();
    let failure: Vec<_> = logs.iter().filter(|l| l["trace_id"] == TRACE_C && l["level"] == "ERROR").collect();
    assert_eq!(failure.len(), 1, "{logs:#?}");
    assert!(failure[0]["error"].as_str().unwrap().contains("500"), "{:?}", failure[0]);
}

/// The access line is written straight to the log writer only when
/// `tracing::enabled!` can answer for the filter. With a span or field
/// directive it cannot (a per-layer filter answers "enabled" to any question
/// no event follows), so the line stays a `tracing` event, filtered exactly
/// as any other: here the middleware's target is at `warn`, and no access
/// line may appear. (Written directly, each of these requests logged one.)
#[tokio::test]
async fn with_a_span_directive_the_access_line_is_filtered_as_any_event() {
    let mut proc = SgProcess::start(&[("RUST_LOG", "warn,sessiongate::cli=info,[no_such_span]=info")]);
    let c = client();
    let alice = token("alice");
    for _ in 0..3 {
        assert_eq!(c.get(proc.url("/v1/sessions")).bearer_auth(&alice).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(proc.url("/v1/sessions")).send().await.unwrap().status(), 401);
    proc.terminate().await;
    let logs = proc.log_lines();
    assert!(
        logs.iter().any(|l| l["event"] == "listening"),
        "the filter lets sessiongate::cli's info through"
    );
    assert!(!logs.iter().any(|l| l["message"] == "request"), "no access line at warn: {logs:#?}");

    // The same requests under `info` are logged, one line each, by the direct path.
    let mut proc = SgProcess::start(&[("RUST_LOG", "info")]);
    for _ in 0..3 {
        assert_eq!(c.get(proc.url("/v1/sessions")).bearer_auth(&alice).send().await.unwrap().status(), 200);
    }
    proc.terminate().await;
    let access = proc.log_lines().into_iter().filter(|l| l["message"] == "request").count();
    assert_eq!(access, 3);
}
