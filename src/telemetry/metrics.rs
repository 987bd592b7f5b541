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
    /// Handles of the per-request series, by their label values.
    http_durations: Handles<HttpKey, Histogram>,
    http_active: Handles<&'static str, Gauge>,
    decisions: Handles<PairKey, Counter>,
    store_durations: Handles<(&'static str, &'static str), Histogram>,
}

/// Handles already registered, by label values. Registering builds a `Key`
/// (a label vector, owned strings, a hash) and looks it up in the recorder's
/// registry; the series of every request are looked up here instead, by
/// borrowed values, and the handle is cloned (one reference count). Label
/// values are bounded sets (routes, statuses, policies), so the map is too.
struct Handles<K, H> {
    map: parking_lot::RwLock<hashbrown::HashMap<K, H>>,
}

impl<K: std::hash::Hash + Eq, H: Clone> Handles<K, H> {
    fn new() -> Self {
        Self { map: parking_lot::RwLock::new(hashbrown::HashMap::new()) }
    }

    /// The handle for `key`; `make` registers it the first time.
    fn get<Q>(&self, key: &Q, make: impl FnOnce() -> (K, H)) -> H
    where
        Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized,
    {
        if let Some(h) = self.map.read().get(key) {
            return h.clone();
        }
        let (k, h) = make();
        self.map.write().entry(k).or_insert(h).clone()
    }
}

/// `(method, route, status)` of `http_server_request_duration_seconds`.
#[derive(Hash, PartialEq, Eq)]
struct HttpKey {
    method: &'static str,
    route: Box<str>,
    status: u16,
}

/// The borrowed form of `HttpKey`; hashes the same.
#[derive(Hash)]
struct HttpKeyRef<'a> {
    method: &'static str,
    route: &'a str,
    status: u16,
}

impl hashbrown::Equivalent<HttpKey> for HttpKeyRef<'_> {
    fn equivalent(&self, k: &HttpKey) -> bool {
        self.method == k.method && self.route == &*k.route && self.status == k.status
    }
}

/// A configured name and a fixed value (`policy`, `decision`).
#[derive(Hash, PartialEq, Eq)]
struct PairKey(std::sync::Arc<str>, &'static str);

/// The borrowed form of `PairKey`; hashes the same.
#[derive(Hash)]
struct PairKeyRef<'a>(&'a str, &'static str);

impl hashbrown::Equivalent<PairKey> for PairKeyRef<'_> {
    fn equivalent(&self, k: &PairKey) -> bool {
        self.0 == &*k.0 && self.1 == k.1
    }
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
        Self {
            recorder,
            handle,
            process,
            http_durations: Handles::new(),
            http_active: Handles::new(),
            decisions: Handles::new(),
            store_durations: Handles::new(),
        }
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

    /// `http_server_request_duration_seconds` of one method, route and status.
    pub fn http_duration(&self, method: &'static str, route: &str, status: u16) -> Histogram {
        self.http_durations.get(&HttpKeyRef { method, route, status }, || {
            let h = self.histogram(
                catalog::HTTP_SERVER_REQUEST_DURATION,
                vec![
                    Label::new("http_request_method", method),
                    Label::new("http_route", route.to_string()),
                    Label::new("http_response_status_code", status.to_string()),
                ],
            );
            (HttpKey { method, route: route.into(), status }, h)
        })
    }

    /// `sessiongate_ratelimit_decisions_total` of one policy and decision.
    pub fn ratelimit_decision(&self, policy: &str, decision: &'static str) -> Counter {
        self.decisions.get(&PairKeyRef(policy, decision), || {
            let policy: std::sync::Arc<str> = policy.into();
            let c = self.counter(
                catalog::RATELIMIT_DECISIONS,
                vec![Label::new("policy", policy.clone()), Label::new("decision", decision)],
            );
            (PairKey(policy, decision), c)
        })
    }

    /// `sessiongate_store_operation_duration_seconds` of one backend and operation.
    pub fn store_duration(&self, backend: &'static str, operation: &'static str) -> Histogram {
        self.store_durations.get(&(backend, operation), || {
            let h = self.histogram(
                catalog::STORE_OPERATION_DURATION,
                vec![Label::new("backend", backend), Label::new("operation", operation)],
            );
            ((backend, operation), h)
        })
    }

    /// `http_server_active_requests` of one method.
    pub fn http_active(&self, method: &'static str) -> Gauge {
        self.http_active.get(&method, || {
            (
                method,
                self.gauge(
                    catalog::HTTP_SERVER_ACTIVE_REQUESTS,
                    vec![Label::new("http_request_method", method)],
                ),
            )
        })
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
