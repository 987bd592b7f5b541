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

/// Install the process-wide log subscriber. `RUST_LOG`, when set, wins over
/// `telemetry.log_level`. Safe to call more than once (later calls do nothing).
pub fn init_logging(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = match config.log_format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
        }
        LogFormat::Pretty => builder.try_init(),
    };
}
