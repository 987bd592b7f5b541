//! The Prometheus recorder of one application instance, and the typed ways to
//! record into it.
//!
//! Each `Application` owns its recorder (not the process-global one), so several
//! instances in one test process keep separate figures. Names, help texts and
//! buckets come from `catalog`; label values are fixed sets or configured names.

use super::catalog::{self, CATALOG, Kind};
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

static METADATA: Metadata<'static> = Metadata::new("sessiongate", Level::INFO, None);

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `process_*` (CPU, resident memory, open fds, start time), read at scrape time.
    process: metrics_process::Collector,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut builder = PrometheusBuilder::new();
        for def in CATALOG.iter().filter(|d| d.kind == Kind::Histogram) {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(def.name.to_string()), def.buckets)
                .expect("catalog buckets are non-empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for def in CATALOG {
            let help = def.help.into();
            match def.kind {
                Kind::Counter => recorder.describe_counter(def.name.into(), def.unit, help),
                Kind::Gauge => recorder.describe_gauge(def.name.into(), def.unit, help),
                Kind::Histogram => recorder.describe_histogram(def.name.into(), def.unit, help),
            }
        }
        // The collector records through the `metrics` macros: point them at this recorder.
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        Self { recorder, handle, process }
    }

    /// The Prometheus text exposition, with the process figures read now.
    pub fn render(&self) -> String {
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.gauge(catalog::RUNTIME_ALIVE_TASKS, Vec::new())
                .set(runtime.metrics().num_alive_tasks() as f64);
        }
        self.handle.render()
    }

    /// Drains histogram buffers; call periodically.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder.register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.recorder.register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    /// `sessiongate_build_info` = 1.
    pub fn set_build_info(&self, store_backend: &'static str) {
        self.gauge(
            catalog::BUILD_INFO,
            vec![
                Label::new("version", env!("CARGO_PKG_VERSION")),
                Label::new("revision", option_env!("SESSIONGATE_REVISION").unwrap_or("unknown")),
                Label::new("store_backend", store_backend),
            ],
        )
        .set(1.0);
    }
}
