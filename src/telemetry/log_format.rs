//! The log line formats: JSON lines for machines, a compact text form for
//! people. Both add the current request's `request_id`, `trace_id` and
//! `span_id` (from `trace_context`, a task-local) to every line written inside
//! a request, without recording spans — logging stays off the span machinery,
//! which the access log would otherwise pay for on every request.
//!
//! A JSON line: `{"timestamp", "level", "message", <event fields>, "target",
//! "request_id", "trace_id", "span_id"}`. Field names are the event's own
//! (`http.route`, `duration_ms`, …); numbers and booleans stay JSON numbers and
//! booleans.
//!
//! The access line, one per request, can also be written here directly
//! (`access`), without a `tracing` event: the same bytes, for less.

use super::log_writer::BatchWriter;
use super::trace_context::RequestContext;
use crate::json::push_str_literal as json_string;
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

const CONTEXT_FIELDS: [&str; 3] = ["request_id", "trace_id", "span_id"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Json,
    Text,
}

/// A `FormatEvent` for `tracing_subscriber::fmt`.
#[derive(Debug, Clone, Copy)]
pub struct LineFormat(pub Style);

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str(&render(self.0, meta.level(), meta.target(), |f| event.record(f)))
    }
}

/// Where `access` writes: the writer and style `telemetry::init` installed.
static DIRECT: OnceLock<(BatchWriter, Style)> = OnceLock::new();

/// Called by `telemetry::init` once its subscriber is the process's.
pub(super) fn write_access_lines_to(writer: BatchWriter, style: Style) {
    let _ = DIRECT.set((writer, style));
}

/// The fields of the access log line.
#[derive(Clone, Copy)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub principal: &'a str,
}

/// The access line as a `tracing` event, at the caller's target (a macro, so
/// the event's target is the call site's): what the envelope logs when
/// `access` does not write, and what a test holds `access` to.
macro_rules! access_event {
    ($line:expr) => {{
        let $crate::telemetry::log_format::AccessLine { method, route, status, duration_ms, principal } =
            $line;
        ::tracing::info!(
            http.request.method = method,
            http.route = route,
            http.response.status_code = status,
            duration_ms,
            principal,
            "request"
        );
    }};
}
pub(crate) use access_event;

/// Whether `access` writes: `telemetry::init` installed our subscriber, with
/// a filter that `tracing::enabled!` answers for. Otherwise the caller logs
/// the access line as a `tracing` event.
pub fn writes_access_lines() -> bool {
    DIRECT.get().is_some()
}

/// Write the access log line (level INFO, message `request`) straight to the
/// log writer: the same line, byte for byte, as the `tracing` event with these
/// fields, without the event's dispatch and field visiting (which cost more
/// than the rest of the line: `docs/performance.md#hand-written-fast-paths--ledger`). The caller checks with
/// `tracing::enabled!` at its own call site that its target logs INFO.
pub fn access(target: &str, line: &AccessLine<'_>) {
    if let Some((writer, style)) = DIRECT.get() {
        writer.write_line(access_line(*style, target, line).as_bytes());
    }
}

fn access_line(style: Style, target: &str, line: &AccessLine<'_>) -> String {
    if style == Style::Json {
        // The field names are known, so no visiting: the values straight in.
        // (A line is about 380 bytes; room for 320 made every line grow once.)
        let mut out = String::with_capacity(512);
        json_head(&mut out, &tracing::Level::INFO, Some("request"));
        out.push_str(",\"http.request.method\":");
        json_string(&mut out, line.method);
        out.push_str(",\"http.route\":");
        json_string(&mut out, line.route);
        out.push_str(",\"http.response.status_code\":");
        out.push_str(itoa::Buffer::new().format(line.status));
        out.push_str(",\"duration_ms\":");
        push_f64(&mut out, Style::Json, line.duration_ms);
        out.push_str(",\"principal\":");
        json_string(&mut out, line.principal);
        json_tail(&mut out, target, [false; 3]);
        return out;
    }
    render(style, &tracing::Level::INFO, target, |f| {
        f.message = Some("request".into());
        f.string("http.request.method", line.method);
        f.string("http.route", line.route);
        f.int("http.response.status_code", line.status);
        f.float("duration_ms", line.duration_ms);
        f.string("principal", line.principal);
    })
}

/// Lower-case hex digits of a trace or span id: a table lookup per nibble
/// (`hex::encode_to_slice` checks and loops enough to cost several times more,
/// twice on every line).
fn push_hex(line: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    line.push_str(std::str::from_utf8(&buf[..bytes.len().min(16) * 2]).unwrap_or_default());
}

/// A JSON line up to its fields: timestamp (now), level and message.
fn json_head(line: &mut String, level: &tracing::Level, message: Option<&str>) {
    line.push_str("{\"timestamp\":\"");
    line.push_str(crate::clock::Rfc3339::now_micros().as_str());
    line.push_str("\",\"level\":\"");
    line.push_str(level.as_str());
    line.push('"');
    if let Some(m) = message {
        line.push_str(",\"message\":");
        json_string(line, m);
    }
}

/// A JSON line after its fields: the target, and the current request's ids
/// unless the event gave them itself (`seen_context`).
fn json_tail(line: &mut String, target: &str, seen_context: [bool; 3]) {
    line.push_str(",\"target\":");
    json_string(line, target);
    RequestContext::with_current(|c| {
        if let Some(c) = c {
            let [request_id, trace_id, span_id] = seen_context;
            if !request_id {
                line.push_str(",\"request_id\":");
                json_string(line, &c.request_id);
            }
            // Hex digits: nothing to escape.
            if !trace_id {
                line.push_str(",\"trace_id\":\"");
                push_hex(line, &c.trace_id.to_bytes());
                line.push('"');
            }
            if !span_id {
                line.push_str(",\"span_id\":\"");
                push_hex(line, &c.span_id.to_bytes());
                line.push('"');
            }
        }
    });
    line.push_str("}\n");
}

/// A float field's value: ryu's shortest exact digits (faster than
/// `Display`; it may print `1.0` where `Display` prints `1`, both JSON
/// numbers), or, for NaN and the infinities, which JSON has not, a string.
fn push_f64(out: &mut String, style: Style, value: f64) {
    if value.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else if style == Style::Json {
        json_string(out, &value.to_string());
    } else {
        out.push_str(&value.to_string());
    }
}

/// One line: timestamp, level, message, the fields `fill` writes, target,
/// and the current request's ids.
fn render(style: Style, level: &tracing::Level, target: &str, fill: impl FnOnce(&mut Fields)) -> String {
    let mut line = String::with_capacity(512);
    let mut fields =
        Fields { style, out: String::with_capacity(192), message: None, seen_context: [false; 3] };
    fill(&mut fields);
    let Fields { out, message, seen_context, .. } = fields;
    match style {
        Style::Json => {
            json_head(&mut line, level, message.as_deref());
            line.push_str(&out);
            json_tail(&mut line, target, seen_context);
        }
        Style::Text => {
            let now = crate::clock::Rfc3339::now_micros();
            let _ = write!(line, "{now} {:>5} {target}", level.as_str());
            if let Some(m) = &message {
                line.push_str(": ");
                line.push_str(m);
            }
            line.push_str(&out);
            RequestContext::with_current(|c| {
                if let Some(c) = c {
                    let _ = write!(
                        line,
                        " request_id={} trace_id={} span_id={}",
                        c.request_id, c.trace_id, c.span_id
                    );
                }
            });
            line.push('\n');
        }
    }
    line
}

struct Fields {
    style: Style,
    out: String,
    message: Option<Cow<'static, str>>,
    seen_context: [bool; 3],
}

impl Fields {
    fn key(&mut self, name: &str) {
        if let Some(i) = CONTEXT_FIELDS.iter().position(|c| *c == name) {
            self.seen_context[i] = true;
        }
        match self.style {
            Style::Json => {
                self.out.push(',');
                json_string(&mut self.out, name);
                self.out.push(':');
            }
            Style::Text => {
                self.out.push(' ');
                self.out.push_str(name);
                self.out.push('=');
            }
        }
    }

    fn string(&mut self, name: &str, value: &str) {
        if name == "message" {
            self.message = Some(value.to_string().into());
            return;
        }
        self.key(name);
        match self.style {
            Style::Json => json_string(&mut self.out, value),
            Style::Text if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"') => {
                let _ = write!(self.out, "{value:?}");
            }
            Style::Text => self.out.push_str(value),
        }
    }

    fn raw(&mut self, name: &str, value: impl fmt::Display) {
        self.key(name);
        let _ = write!(self.out, "{value}");
    }

    fn int(&mut self, name: &str, value: impl itoa::Integer) {
        self.key(name);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn float(&mut self, name: &str, value: f64) {
        self.key(name);
        push_f64(&mut self.out, self.style, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field.name(), &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field.name(), &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.int(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.int(field.name(), value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field.name(), value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.float(field.name(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(style: Style, f: impl FnOnce()) -> String {
        let sink = Capture::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(LineFormat(style))
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_are_valid_json_with_typed_fields() {
        let out = capture(Style::Json, || {
            tracing::info!(
                http.route = "/v1/x",
                status = 201u16,
                ok = true,
                ms = 1.5,
                weird = "a\"b\\c\nd\u{1}",
                "hi \"there\""
            );
        });
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "hi \"there\"");
        assert_eq!(v["http.route"], "/v1/x");
        assert_eq!(v["status"], 201);
        assert_eq!(v["ok"], true);
        assert_eq!(v["ms"], 1.5);
        assert_eq!(v["weird"], "a\"b\\c\nd\u{1}");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.len() == 27 && ts.ends_with('Z'), "{ts}");
        let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        assert!((chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 5, "{ts}");
        assert!(v.get("trace_id").is_none(), "no request, no trace id");
    }

    #[tokio::test]
    async fn lines_inside_a_request_carry_its_ids() {
        let cx =
            RequestContext::for_request(Arc::from("req-7"), &http::HeaderMap::new(), &tracing::Span::none());
        let (trace, span) = (cx.trace_id.to_string(), cx.span_id.to_string());
        let out = cx.scope(async { capture(Style::Json, || tracing::warn!(n = f64::NAN, "inside")) }).await;
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["request_id"], "req-7");
        assert_eq!(v["trace_id"], trace);
        assert_eq!(v["span_id"], span);
        assert_eq!(v["n"], "NaN");

        let cx =
            RequestContext::for_request(Arc::from("req-8"), &http::HeaderMap::new(), &tracing::Span::none());
        let text =
            cx.scope(async { capture(Style::Text, || tracing::info!(k = "two words", "hello")) }).await;
        assert!(text.contains("INFO"), "{text}");
        assert!(text.contains(": hello k=\"two words\" request_id=req-8 trace_id="), "{text}");
    }

    /// The access line written directly is the `tracing` event's line, byte
    /// for byte after the timestamp, in both styles, inside and outside a
    /// request, with strings that need escaping or quoting.
    #[tokio::test]
    async fn the_direct_access_line_is_the_events_line() {
        fn event(line: &AccessLine<'_>) {
            access_event!(*line);
        }
        let after_timestamp = |s: &str| s.split_once("Z").expect("a timestamp").1.to_string();
        let lines = [
            AccessLine {
                method: "GET",
                route: "/v1/sessions/{id}",
                status: 200,
                duration_ms: 0.123,
                principal: "user",
            },
            AccessLine {
                method: "_OTHER",
                route: "un\"matched\\ two words",
                status: 404,
                duration_ms: 12.0,
                principal: "none",
            },
            AccessLine {
                method: "POST",
                route: "",
                status: 429,
                duration_ms: f64::NAN,
                principal: "api_key",
            },
        ];
        for style in [Style::Json, Style::Text] {
            for line in &lines {
                let direct = access_line(style, module_path!(), line);
                let traced = capture(style, || event(line));
                assert_eq!(after_timestamp(&direct), after_timestamp(&traced));
                let cx = RequestContext::for_request(
                    Arc::from("req-9"),
                    &http::HeaderMap::new(),
                    &tracing::Span::none(),
                );
                let (direct, traced) = cx
                    .scope(async {
                        (access_line(style, module_path!(), line), capture(style, || event(line)))
                    })
                    .await;
                assert!(direct.contains("req-9"), "{direct}");
                assert_eq!(after_timestamp(&direct), after_timestamp(&traced));
            }
        }
    }

    #[test]
    fn ids_are_lower_case_hex() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        for chunk in bytes.chunks(16) {
            let mut out = String::new();
            push_hex(&mut out, chunk);
            assert_eq!(out, hex::encode(chunk));
        }
        let mut out = String::new();
        push_hex(&mut out, &[0xab; 8]);
        assert_eq!(out, "abababababababab");
    }

    #[test]
    fn an_explicit_field_is_not_duplicated_by_the_context() {
        let out = capture(Style::Json, || tracing::info!(request_id = "own", "x"));
        assert_eq!(out.matches("request_id").count(), 1);
    }
}
