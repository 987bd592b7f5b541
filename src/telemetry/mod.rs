//! Telemetry: the metrics catalog, the recorder, domain events, and log set-up.
//!
//! It knows the domain's vocabulary (sessions, end reasons) but not the HTTP
//! handlers that cause the events.

pub mod catalog;
pub mod events;
pub mod metrics;

pub use events::Events;
pub use metrics::Metrics;

use crate::config::{LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;

/// Flushes buffered log lines when dropped: hold it for the life of the process.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Install the process-wide log subscriber. `RUST_LOG`, when set, wins over
/// `telemetry.log_level`. Safe to call more than once (later calls do nothing
/// and return `None`).
///
/// Two choices keep logging off the request's critical path (together 30% of
/// a request's instructions in the callgrind profile noted in the README):
/// the log layer sees only events — every line names its own fields
/// (`request_id`, route, …) — so it never records span fields; and lines are
/// written by a background thread (never dropped: a full buffer blocks).
pub fn init_logging(config: &TelemetryConfig) -> Option<LogGuard> {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let level = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let only_events = filter_fn(|meta| meta.is_event());
    let (writer, guard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stdout());
    let layer = match config.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(level.and(only_events))
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(writer).with_filter(level.and(only_events)).boxed(),
    };
    tracing_subscriber::registry().with(layer).try_init().ok().map(|_| guard)
}
