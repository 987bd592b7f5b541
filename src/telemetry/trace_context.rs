//! The request's place in a distributed trace, for logs, problem bodies and
//! outgoing calls: its trace id, its server span id, and the W3C headers it
//! arrived with.
//!
//! Two sources, one shape. With an OTLP exporter configured, the ids are the
//! OpenTelemetry server span's own (so logs and exported spans agree). Without
//! one, no span is recorded at all (no cost): the trace id is continued from an
//! incoming `traceparent` or drawn at random, and the span id drawn at random,
//! so logs and problems still correlate with the caller's trace and with the
//! agent's (which gets a `traceparent` either way).
//!
//! The context lives in a task-local for the duration of the request, so that
//! every log line written inside it carries the ids without touching spans.
//! `Detached` carries it into work a request starts that must outlive the
//! request (a store change whose client went away).
//! Knows nothing of HTTP routing or handlers.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

// Statics, not `&str`s: a lookup by a string parses the name every time.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// W3C Trace Context's bounds on a `tracestate` we pass on: 32 members, 512
/// bytes; a member over 128 bytes is the first to go (§3.3.1.5).
const TRACESTATE_MEMBERS: usize = 32;
const TRACESTATE_BYTES: usize = 512;
const TRACESTATE_LONG_MEMBER: usize = 128;

/// The client's `tracestate` as we forward it: unchanged within the bounds;
/// else its members over 128 bytes dropped, then members from the end, until
/// it fits; `None` when nothing is left (or it is not text).
fn bounded_tracestate(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let members = || text.split(',').map(str::trim).filter(|m| !m.is_empty());
    if text.len() <= TRACESTATE_BYTES && members().count() <= TRACESTATE_MEMBERS {
        return Some(value.clone());
    }
    let mut kept = String::with_capacity(TRACESTATE_BYTES);
    for member in members().filter(|m| m.len() <= TRACESTATE_LONG_MEMBER).take(TRACESTATE_MEMBERS) {
        let sep = usize::from(!kept.is_empty());
        if kept.len() + sep + member.len() > TRACESTATE_BYTES {
            break;
        }
        if sep == 1 {
            kept.push(',');
        }
        kept.push_str(member);
    }
    (!kept.is_empty()).then(|| HeaderValue::from_str(&kept).ok()).flatten()
}

/// Set once, when the OpenTelemetry layer is installed.
static OTEL_ENABLED: AtomicBool = AtomicBool::new(false);

pub(crate) fn mark_otel_enabled() {
    OTEL_ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are being exported (and so carry the ids).
pub fn otel_enabled() -> bool {
    OTEL_ENABLED.load(Ordering::Relaxed)
}

/// What every log line inside a request carries, and what outgoing calls
/// propagate.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    /// The caller's `tracestate`, forwarded unchanged when no exporter runs
    /// (with one, the OpenTelemetry context carries it).
    pub tracestate: Option<HeaderValue>,
    /// Who called, once authentication has said (`user`, `api_key`), for the
    /// access log; `none` until then.
    pub principal: Cell<&'static str>,
    /// When the request's own timeout answers `408`, once the envelope has
    /// said: work inside the request (the agent call) ends before it.
    pub deadline: Cell<Option<std::time::Instant>>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

impl RequestContext {
    /// The context of a request: continued from its headers, or new. When
    /// `span` is recorded by OpenTelemetry, it is parented on the incoming
    /// context and its ids are used.
    pub fn for_request(request_id: Arc<str>, headers: &HeaderMap, span: &tracing::Span) -> Self {
        if otel_enabled() && !span.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
            let _ = span.set_parent(parent);
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                return Self {
                    request_id,
                    trace_id: sc.trace_id(),
                    span_id: sc.span_id(),
                    sampled: sc.is_sampled(),
                    tracestate: None,
                    principal: Cell::new("none"),
                    deadline: Cell::new(None),
                };
            }
        }
        let (trace_id, sampled, tracestate) = match headers.get(&TRACEPARENT).and_then(parse_traceparent) {
            Some((trace_id, sampled)) => {
                (trace_id, sampled, headers.get(&TRACESTATE).and_then(bounded_tracestate))
            }
            None => (TraceId::from(rand::random::<u128>().max(1)), false, None),
        };
        Self {
            request_id,
            trace_id,
            span_id: SpanId::from(rand::random::<u64>().max(1)),
            sampled,
            tracestate,
            principal: Cell::new("none"),
            deadline: Cell::new(None),
        }
    }

    /// Run `fut` with this context current. (A plain function, not an
    /// `async fn`: that would hold `fut` twice, once unstarted and once
    /// inside the task-local future, and the request's future is large.)
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// Read the current request's context, if inside one.
    pub fn with_current<R>(f: impl FnOnce(Option<&RequestContext>) -> R) -> R {
        let mut f = Some(f);
        match CURRENT.try_with(|c| (f.take().expect("called once"))(Some(c))) {
            Ok(r) => r,
            Err(_) => (f.take().expect("not called"))(None),
        }
    }

    /// The trace id of the current request, as 32 lowercase hex digits.
    pub fn current_trace_id() -> Option<String> {
        Self::with_current(|c| c.map(|c| c.trace_id.to_string()))
    }
}

/// Put the current trace context on an outgoing request: the current
/// OpenTelemetry span's when exporting, else the request's own ids (so the
/// callee's logs join the same trace).
pub fn inject_current(headers: &mut HeaderMap) {
    if otel_enabled() {
        let cx = tracing::Span::current().context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
            return;
        }
    }
    RequestContext::with_current(|c| {
        if let Some(c) = c {
            let value = format!("00-{}-{}-{:02x}", c.trace_id, c.span_id, u8::from(c.sampled));
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(TRACEPARENT.clone(), v);
            }
            if let Some(ts) = &c.tracestate {
                headers.insert(TRACESTATE.clone(), ts.clone());
            }
        }
    });
}

/// A W3C `traceparent` (version 00, or a later version read as 00 per the
/// spec's forward-compatibility rule): its trace id and sampled flag, or
/// `None` when malformed or all-zero.
pub fn parse_traceparent(value: &HeaderValue) -> Option<(TraceId, bool)> {
    let s = value.to_str().ok()?.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && rest.is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let span_id = u64::from_str_radix(span, 16).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((TraceId::from(trace_id), flags & 1 == 1))
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tracestate_past_the_w3c_bounds_is_cut_down_to_them() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let small = v("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
        assert_eq!(bounded_tracestate(&small), Some(small.clone()), "within the bounds: unchanged");
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let cut = bounded_tracestate(&v(&many.join(","))).unwrap();
        assert_eq!(cut.to_str().unwrap().split(',').count(), 32, "the first 32 members");
        assert!(cut.to_str().unwrap().starts_with("k0=v,k1=v"));
        let long = format!(
            "big={},small=1,{}",
            "x".repeat(200),
            (0..60).map(|i| format!("m{i}=0123456789")).collect::<Vec<_>>().join(",")
        );
        let cut = bounded_tracestate(&v(&long)).unwrap();
        let cut = cut.to_str().unwrap();
        assert!(cut.len() <= 512 && cut.starts_with("small=1,m0="), "{cut}");
        assert!(!cut.contains("big="), "the member over 128 bytes goes first");
        assert_eq!(bounded_tracestate(&v(&format!("only={}", "y".repeat(600)))), None);
    }

    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let (t, sampled) =
            parse_traceparent(&hv("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(sampled);
        let (_, sampled) =
            parse_traceparent(&hv("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).unwrap();
        assert!(!sampled);
        // A future version may append fields.
        assert!(
            parse_traceparent(&hv("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")).is_some()
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
            "",
        ] {
            assert!(parse_traceparent(&hv(bad)).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_request_continues_the_callers_trace_and_propagates_it() {
        let mut incoming = HeaderMap::new();
        incoming.insert(TRACEPARENT.clone(), hv("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        incoming.insert(TRACESTATE.clone(), hv("vendor=1"));
        let cx = RequestContext::for_request(Arc::from("req-1"), &incoming, &tracing::Span::none());
        assert_eq!(cx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(cx.span_id.to_string(), "00f067aa0ba902b7");
        let span_id = cx.span_id;
        let outgoing = cx
            .scope(async {
                assert_eq!(RequestContext::current_trace_id().unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
                let mut h = HeaderMap::new();
                inject_current(&mut h);
                h
            })
            .await;
        assert_eq!(
            outgoing[&TRACEPARENT].to_str().unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01")
        );
        assert_eq!(outgoing[&TRACESTATE], "vendor=1");
        assert!(RequestContext::current_trace_id().is_none());
    }

    #[test]
    fn without_a_traceparent_a_new_trace_starts() {
        let a = RequestContext::for_request(Arc::from("a"), &HeaderMap::new(), &tracing::Span::none());
        let b = RequestContext::for_request(Arc::from("b"), &HeaderMap::new(), &tracing::Span::none());
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.trace_id, TraceId::INVALID);
        assert!(!a.sampled);
    }
}

/// Work a request starts that must run to its end even if the request is
/// dropped meanwhile (its client went away, its deadline passed): a store
/// change a remote store will still apply, a runtime-config change. One for
/// the process; shutdown waits for what is still running (`finish`).
#[derive(Clone, Default)]
pub struct Detached(tokio_util::task::TaskTracker);

impl Detached {
    /// Run `fut` in a task of its own, with the current request's span and,
    /// inside one, its context (so its log lines keep the request id).
    /// `None` when the runtime cancelled it (the process is ending); a panic
    /// is resumed here.
    pub async fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Option<T> {
        use tracing::Instrument;
        let fut = fut.instrument(tracing::Span::current());
        let task = match RequestContext::with_current(|c| c.cloned()) {
            Some(context) => self.0.spawn(context.scope(fut)),
            None => self.0.spawn(fut),
        };
        match task.await {
            Ok(done) => Some(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }

    /// At shutdown, once no request is left: wait up to `within` for what is
    /// still running, so its events are counted and logged.
    pub async fn finish(&self, within: std::time::Duration) {
        self.0.close();
        if tokio::time::timeout(within, self.0.wait()).await.is_err() {
            tracing::warn!(
                left = self.0.len(),
                "work of requests that went away still running at shutdown; its events are lost"
            );
        }
    }
}
