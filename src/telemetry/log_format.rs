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

use super::trace_context::RequestContext;
use std::fmt::{self, Write as _};
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
        writer.write_str(&render(self.0, event))
    }
}

/// `"<32 hex digits>"`-style ids without the formatting machinery.
fn push_hex(line: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 32];
    let hex = &mut buf[..bytes.len() * 2];
    if hex::encode_to_slice(bytes, hex).is_ok() {
        line.push_str(std::str::from_utf8(hex).unwrap_or_default());
    }
}

fn render(style: Style, event: &Event<'_>) -> String {
    let meta = event.metadata();
    // (A clock before 1970 would make humantime panic; it prints the epoch instead.)
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now().max(std::time::UNIX_EPOCH));
    let mut line = String::with_capacity(320);
    let mut fields =
        Fields { style, out: String::with_capacity(192), message: None, seen_context: [false; 3] };
    event.record(&mut fields);
    let Fields { out, message, seen_context, .. } = fields;
    match style {
        Style::Json => {
            let _ = write!(line, "{{\"timestamp\":\"{now}");
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push('"');
            if let Some(m) = &message {
                line.push_str(",\"message\":");
                json_string(&mut line, m);
            }
            line.push_str(&out);
            line.push_str(",\"target\":");
            json_string(&mut line, meta.target());
            RequestContext::with_current(|c| {
                if let Some(c) = c {
                    let [request_id, trace_id, span_id] = seen_context;
                    if !request_id {
                        line.push_str(",\"request_id\":");
                        json_string(&mut line, &c.request_id);
                    }
                    // Hex digits: nothing to escape.
                    if !trace_id {
                        line.push_str(",\"trace_id\":\"");
                        push_hex(&mut line, &c.trace_id.to_bytes());
                        line.push('"');
                    }
                    if !span_id {
                        line.push_str(",\"span_id\":\"");
                        push_hex(&mut line, &c.span_id.to_bytes());
                        line.push('"');
                    }
                }
            });
            line.push_str("}\n");
        }
        Style::Text => {
            let _ = write!(line, "{now} {:>5} {}", meta.level().as_str(), meta.target());
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
    message: Option<String>,
    seen_context: [bool; 3],
}

impl Fields {
    fn key(&mut self, field: &Field) {
        let name = field.name();
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

    fn string(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
            return;
        }
        self.key(field);
        match self.style {
            Style::Json => json_string(&mut self.out, value),
            Style::Text if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"') => {
                let _ = write!(self.out, "{value:?}");
            }
            Style::Text => self.out.push_str(value),
        }
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            // ryu: the shortest exact digits, faster than `Display` (it may
            // print `1.0` where `Display` prints `1`; both are JSON numbers).
            self.key(field);
            self.out.push_str(ryu::Buffer::new().format_finite(value));
        } else {
            // JSON has no NaN or infinity.
            self.string(field, &value.to_string());
        }
    }
}

/// Whether any byte is a control character, `"` or `\\`: eight bytes at a
/// time (the classic "has a byte less than n / equal to c" bit tricks), as
/// every string of every log line passes here.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let special = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\';
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'"')));
        let backslash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'\\')));
        // The tricks are exact about whether a chunk holds such a byte (not
        // which); checking the chunk byte by byte keeps this obviously right.
        if (below_space | quote | backslash) & HIGHS != 0 && chunk.iter().any(special) {
            return true;
        }
    }
    chunks.remainder().iter().any(special)
}

/// Append `s` as a JSON string literal (RFC 8259 escaping).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        // The usual case: nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_escape_agrees_with_the_byte_by_byte_answer() {
        let special = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\';
        let mut cases: Vec<Vec<u8>> = vec![b"".to_vec(), "héllo wörld, ünïcode ✓ 🙂".as_bytes().to_vec()];
        // Every byte value at every position of strings around the chunk size.
        for len in [1usize, 7, 8, 9, 16, 17] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    cases.push(v);
                }
            }
        }
        // High bytes next to borderline ones: no false hits from borrows.
        cases.push(vec![0x80, 0x21, 0xff, 0x23, 0x5b, 0x5d, 0x7f, 0xc3, 0xa9]);
        for v in cases {
            assert_eq!(needs_escape(&v), v.iter().any(special), "{v:?}");
        }
    }
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

    #[test]
    fn an_explicit_field_is_not_duplicated_by_the_context() {
        let out = capture(Style::Json, || tracing::info!(request_id = "own", "x"));
        assert_eq!(out.matches("request_id").count(), 1);
    }
}
