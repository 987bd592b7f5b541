//! Telemetry: the metrics catalog, the recorder, domain events, and log set-up.
//!
//! It knows the domain's vocabulary (sessions, end reasons) but not the HTTP
//! handlers that cause the events.

pub mod catalog;
pub mod events;
pub mod log_format;
pub mod log_writer;
pub mod metrics;
pub mod otel;
pub mod trace_context;

pub use events::Events;
pub use metrics::Metrics;
pub use trace_context::{Detached, RequestContext};

use crate::config::{LogFormat, TelemetryConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;

/// Hold it for the life of the process; `shutdown` flushes what is buffered:
/// log lines, and spans when exporting.
pub struct TelemetryGuard {
    _log: Option<log_writer::LogWriterGuard>,
    tracer: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Export buffered spans, then flush log lines.
    pub async fn shutdown(self) {
        if let Some(provider) = self.tracer {
            otel::shutdown(provider).await;
        }
    }
}

/// Install the process-wide subscriber: the log layer, plus the OpenTelemetry
/// layer when `OTEL_*` asks for export (see `otel`). `RUST_LOG`, when set, wins
/// over `telemetry.log_level`. Must run inside the tokio runtime. A second call
/// in the same process installs nothing and returns a guard that holds nothing.
///
/// Two choices keep logging off the request's critical path (what they saved,
/// as last measured: `docs/performance.md#hand-written-fast-paths--ledger`):
/// the log layer sees only events — request ids and trace ids come from a
/// task-local (`trace_context`), not from span fields — and lines are written
/// by a background thread in batches (`log_writer`; never dropped: a full
/// buffer blocks).
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let settings = otel::OtlpSettings::from_env(|k| std::env::var(k).ok())?;
    let (level, directives) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, std::env::var("RUST_LOG").unwrap_or_default()),
        Err(_) => (EnvFilter::new(&config.log_level), config.log_level.clone()),
    };
    let only_events = filter_fn(|meta| meta.is_event());
    let (writer, log_guard) = log_writer::batch_writer(std::io::stdout());
    let style = match config.log_format {
        LogFormat::Json => log_format::Style::Json,
        LogFormat::Pretty => log_format::Style::Text,
    };
    let log_layer = fmt::layer()
        .event_format(log_format::LineFormat(style))
        .with_writer(writer.clone())
        .with_filter(level.and(only_events));

    let provider = settings.as_ref().map(otel::build_provider).transpose()?;
    let otel_layer = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        // Our own spans only (client libraries' spans would be noise), and
        // no events: the log layer has those.
        let ours = filter_fn(|meta| meta.is_span() && meta.target().starts_with("sessiongate"));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sessiongate"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_filter(ours)
    });
    // Two shapes, not `.with(Option<layer>)`: a `None` layer answers
    // "enabled" for every callsite, which would switch on every span and
    // debug event in the process (the log layer's own filter would still drop
    // them, but only after they were built).
    let installed = match otel_layer {
        Some(otel) => tracing_subscriber::registry().with(log_layer).with(otel).try_init().is_ok(),
        None => tracing_subscriber::registry().with(log_layer).try_init().is_ok(),
    };
    if !installed {
        if let Some(p) = provider {
            // Shutting down blocks; nothing was exported, so nobody waits.
            std::thread::spawn(move || p.shutdown());
        }
        return Ok(TelemetryGuard { _log: None, tracer: None });
    }
    if provider.is_some() {
        trace_context::mark_otel_enabled();
    }
    // The access line bypasses `tracing` only when `tracing::enabled!` can
    // answer for the filter: with level and target directives alone, which
    // are decided per call site. A span or field directive (`[...]`) is
    // decided per event, and a per-layer filter then answers "enabled" to any
    // question that no event follows (and can drop the next line); there, the
    // access line stays a `tracing` event.
    if !directives.contains('[') {
        log_format::write_access_lines_to(writer, style);
    }
    Ok(TelemetryGuard { _log: Some(log_guard), tracer: provider })
}
