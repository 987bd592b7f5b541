//! What ships for operators (rendered by the monitoring mixin in `mixin/`),
//! checked by the real tools: the Prometheus config, recording rules and
//! alerts (`promtool check`, `promtool test rules`), every alert's runbook and
//! unit tests, every dashboard's structure and metric names; and end to end, a
//! real Prometheus scraping two real sessiongates on Redis, labelled as
//! Kubernetes service discovery labels two namespaces: every panel's every
//! query returns data, and killing one namespace's Redis pages for that
//! namespace alone.

use crate::workload::Workload;
use serde_json::Value;
use sessiongate::telemetry::catalog::{CATALOG, Kind};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("promtool is installed (Debian package prometheus; scripts/test.sh installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

#[test]
fn promtool_accepts_the_config_and_rules_and_every_rule_test_passes() {
    let said = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(said.contains("SUCCESS: 20 rules found") && said.contains("SUCCESS: 12 rules found"), "{said}");
    let said = promtool(&["test", "rules", "deploy/prometheus/tests/alerts_test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// An alert rule as written in alerts.yml.
struct AlertRule {
    name: String,
    severity: String,
    block: String,
}

fn alert_rules() -> Vec<AlertRule> {
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    text.split("- alert: ")
        .skip(1)
        .map(|block| {
            let name = block.lines().next().unwrap().trim().to_string();
            let severity = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("severity: "))
                .unwrap_or_else(|| panic!("{name} has no severity"))
                .to_string();
            AlertRule { name, severity, block: block.to_string() }
        })
        .collect()
}

#[test]
fn every_alert_has_annotations_a_runbook_and_tests_both_ways() {
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    for required in [
        "SessiongateAvailabilityBudgetBurn",
        "SessiongateLatencyBudgetBurn",
        "SessiongateStoreUnavailable",
        "SessiongateRateLimiterStoreErrors",
        "SessiongateAuthFailureSpike",
        "SessiongateJwksRefreshFailing",
        "SessiongateRequestsShed",
        "SessiongateSessionCapHitsSurging",
        "SessiongateReaperStalled",
        "SessiongateTargetDown",
    ] {
        assert!(names.contains(required), "{required} is missing");
    }
    let tests = std::fs::read_to_string(repo("deploy/prometheus/tests/alerts_test.yml")).unwrap();
    let runbook_index = std::fs::read_to_string(repo("deploy/runbooks/README.md")).unwrap();
    for rule in &rules {
        assert!(
            ["page", "ticket"].contains(&rule.severity.as_str()),
            "{}: severity {}",
            rule.name,
            rule.severity
        );
        for key in ["summary:", "description:", "runbook_url:"] {
            assert!(rule.block.contains(key), "{} has no {key}", rule.name);
        }
        // An absolute link (it is followed from a page or Alertmanager), to
        // the page of deploy/runbooks/ its last segment names.
        let url = rule.block.lines().find_map(|l| l.trim().strip_prefix("runbook_url: ")).unwrap();
        assert!(url.starts_with("https://"), "{}: runbook_url {url} is not an absolute link", rule.name);
        let file = url.rsplit('/').next().unwrap();
        let runbook = format!("deploy/runbooks/{}.md", file.trim_end_matches(".md"));
        let page = std::fs::read_to_string(repo(&runbook))
            .unwrap_or_else(|e| panic!("{}: runbook {runbook}: {e}", rule.name));
        assert!(page.starts_with(&format!("# {}", rule.name)), "{runbook} is not {}'s page", rule.name);
        for section in ["## What it means", "## Confirm", "## Act"] {
            assert!(page.contains(section), "{runbook} lacks {section}");
        }
        assert!(
            runbook_index.contains(&format!("`{}`", rule.name)),
            "{} is not in the runbook index",
            rule.name
        );

        // A test where it fires (with this severity) and one where it stays quiet.
        let cases: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|c| c.starts_with(&format!("{}\n", rule.name)))
            .collect();
        let cut = |c: &str| c.split("- eval_time").next().unwrap_or("").to_string();
        assert!(
            cases.iter().any(|c| cut(c).contains(&format!("severity: {}", rule.severity))),
            "no test where {} fires with severity {}",
            rule.name,
            rule.severity
        );
        assert!(
            cases.iter().any(|c| cut(c).contains("exp_alerts: []")),
            "no test where {} stays quiet",
            rule.name
        );
    }
}

// ---------------------------------------------------------------------------
// Dashboards

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().to_string(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "four dashboards: overview, sessions, rate limiting & auth, dependencies");
    out
}

/// Every panel, nested ones (inside collapsed rows) included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            out.push(p);
            walk(p, out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// Every query of a dashboard: (panel title, expr).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"].as_array().into_iter().flatten().filter_map(move |t| {
                t["expr"].as_str().filter(|e| !e.trim().is_empty()).map(|e| (title.clone(), e.to_string()))
            })
        })
        .collect()
}

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names or inside strings, ranges and matchers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    // Blank out strings, label matchers and range selectors.
    let mut cleaned = String::new();
    let (mut quote, mut depth_brace, mut depth_bracket) = (None, 0, 0);
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => {
                cleaned.push(c);
                continue;
            }
            _ => {}
        }
        cleaned.push(' ');
    }
    // Drop the label lists of by/without/on/ignoring/group_*.
    let mut names = BTreeSet::new();
    let tokens: Vec<(String, char)> = {
        let mut out = Vec::new();
        let chars: Vec<char> = cleaned.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied().unwrap_or(' ');
                out.push((word, next));
            } else if c.is_ascii_digit() || c == '.' {
                // A number (e.g. 0.99 or 1e3): skip it whole.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else {
                if !c.is_whitespace() {
                    out.push((c.to_string(), ' '));
                }
                i += 1;
            }
        }
        out
    };
    let mut skip_list = false;
    for (i, (tok, next)) in tokens.iter().enumerate() {
        if skip_list {
            if tok == ")" {
                skip_list = false;
            }
            continue;
        }
        let lower = tok.to_ascii_lowercase();
        if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&lower.as_str()) {
            skip_list = tokens.get(i + 1).is_some_and(|(t, _)| t == "(");
            continue;
        }
        let is_word = tok.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if !is_word || *next == '(' || KEYWORDS.contains(&lower.as_str()) {
            continue;
        }
        names.insert(tok.clone());
    }
    names
}

/// Names a query may read: the catalog, with a histogram's series suffixes.
fn catalog_names() -> HashSet<String> {
    let mut names = HashSet::new();
    for def in CATALOG {
        names.insert(def.name.to_string());
        if matches!(def.kind, Kind::Histogram) {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{}{suffix}", def.name));
            }
        }
    }
    // The recording rules of rules.yml (the SLO rows read them).
    let rules = std::fs::read_to_string(repo("deploy/prometheus/rules.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- record: ") {
            names.insert(name.to_string());
        }
    }
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        names.insert(process.to_string());
    }
    names
}

#[test]
fn the_metric_name_reader_reads_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{job=~"$job", http_route!~"/x{y}"}[$__rate_interval]))) / on(job) group_left(version) max(sessiongate_build_info) or vector(0) - time() * 1e3"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["http_server_request_duration_seconds_bucket", "sessiongate_build_info"]
    );
}

#[test]
fn every_dashboard_is_well_formed_and_reads_only_catalog_metrics() {
    let catalog = catalog_names();
    let mut uids = HashSet::new();
    for (file, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} is not unique");
        assert!(d["title"].is_string(), "{file}: no title");
        let vars: Vec<&str> =
            d["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
        for var in ["datasource", "cluster", "namespace", "job", "instance"] {
            assert!(vars.contains(&var), "{file}: no ${var} variable");
        }
        assert!(
            d["panels"].as_array().unwrap().iter().filter(|p| p["type"] == "row").count() >= 2,
            "{file}: its panels are not in rows"
        );
        // Grafana's own annotation (alert state changes), firing alerts
        // and deploys.
        let annotations = d["annotations"]["list"].as_array().unwrap();
        assert!(
            annotations.iter().any(|a| a["builtIn"] == 1),
            "{file}: Grafana's built-in annotation is gone"
        );
        let exprs: Vec<&str> = annotations.iter().filter_map(|a| a["expr"].as_str()).collect();
        assert!(exprs.iter().any(|e| e.starts_with("ALERTS{")), "{file}: no annotation of firing alerts");
        assert!(
            exprs.iter().any(|e| e.contains("sessiongate_build_info")),
            "{file}: no annotation of deploys"
        );
        let mut ids = HashSet::new();
        let all = panels(&d);
        assert!(!all.is_empty(), "{file}: no panels");
        for p in all {
            let title = p["title"].as_str().unwrap_or("?");
            let id = p["id"].as_i64().unwrap_or_else(|| panic!("{file}: panel {title} has no id"));
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: panel {title} hard-codes its datasource"
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"].as_str().is_some_and(|u| !u.is_empty()),
                "{file}: panel {title} has no unit"
            );
            let targets =
                p["targets"].as_array().unwrap_or_else(|| panic!("{file}: panel {title} has no targets"));
            assert!(!targets.is_empty(), "{file}: panel {title} has no queries");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{file}: a query of {title} hard-codes its datasource"
                );
                let expr =
                    t["expr"].as_str().unwrap_or_else(|| panic!("{file}: a query of {title} has no expr"));
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{file}: {title}: {expr} reads no metric");
                for name in names {
                    assert!(catalog.contains(&name), "{file}: {title}: {name} is not in the metrics catalog");
                }
                if expr.contains('[') {
                    assert!(
                        expr.contains("[$__rate_interval]"),
                        "{file}: {title}: use $__rate_interval: {expr}"
                    );
                }
            }
        }
        // Only the declared variables (plus Grafana's rate interval) are used.
        let text = d.to_string();
        for var in text.split('$').skip(1) {
            let name: String = var
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                ["__rate_interval", "__all"].contains(&name.as_str())
                    || vars.contains(&name.as_str())
                    || name.is_empty(),
                "{file}: unknown variable ${name}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// End to end: a real Prometheus scraping a real sessiongate.

struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes each target (with its labels, as Kubernetes service discovery
    /// would set them) every second, and evaluates the shipped rules every
    /// second.
    async fn start(targets: &[(String, &[(&str, &str)])]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut static_configs = String::new();
        for (target, labels) in targets {
            static_configs.push_str(&format!("      - targets: [\"{target}\"]\n        labels:\n"));
            for (name, value) in *labels {
                static_configs.push_str(&format!("          {name}: \"{value}\"\n"));
            }
        }
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n  - {alerts}\n\
             scrape_configs:\n  - job_name: sessiongate\n    static_configs:\n{static_configs}",
            rules = repo("deploy/prometheus/rules.yml").display(),
            alerts = repo("deploy/prometheus/alerts.yml").display(),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian package prometheus; scripts/test.sh installs it)");
        let prom = Prometheus { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/-/ready", prom.base)).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prom
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.base), query).unwrap();
        let r = reqwest::Client::new().get(url).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// An instant query's result list.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().unwrap().clone(),
            Some("scalar" | "string") => vec![data["result"].clone()],
            other => panic!("unexpected result type {other:?}"),
        }
    }

    /// The alerts named `name`, pending or firing: their labels and state.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        let data = self.api("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }
}

/// A dashboard query as Grafana would send it, for one job, every cluster,
/// the namespaces matching `namespace` (one value, or `.*` for All) and all
/// instances.
fn as_grafana_sends_it(expr: &str, namespace: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$cluster", ".*")
        .replace("$namespace", namespace)
        .replace("$job", "sessiongate")
        .replace("$instance", ".*")
}

/// The namespace label of each alert, sorted.
fn namespaces_of(alerts: &[Value]) -> Vec<String> {
    let mut out: Vec<String> =
        alerts.iter().map(|a| a["labels"]["namespace"].as_str().unwrap_or("").to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_in_one_prometheus_page_apart_and_every_panel_has_data() {
    // Two environments, labelled as Kubernetes service discovery labels
    // them: prod stays healthy; staging loses its Redis.
    let prod = Workload::start().await;
    let mut staging = Workload::start().await;
    const PROD: &[(&str, &str)] = &[("cluster", "test-cluster"), ("namespace", "prod")];
    const STAGING: &[(&str, &str)] = &[("cluster", "test-cluster"), ("namespace", "staging")];
    let prom =
        Prometheus::start(&[(prod.app.addr.to_string(), PROD), (staging.app.addr.to_string(), STAGING)])
            .await;

    staging.round().await;
    // Traffic for long enough that every rate window holds several scrapes.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        prod.round().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let up = prom.query("up{job=\"sessiongate\"} == 1").await;
    assert_eq!(up.len(), 2, "both targets are scraped: {up:?}");
    assert!(prom.alerts("SessiongateAvailabilityBudgetBurn").await.is_empty(), "nothing fails yet");
    assert!(prom.alerts("SessiongateStoreUnavailable").await.is_empty(), "both Redis are up");

    // Staging's Redis dies: its session requests get 503s while prod goes on.
    staging.break_the_store().await;
    let deadline = Instant::now() + Duration::from_secs(45);
    let (burn, store) = loop {
        prod.round().await;
        staging.requests_during_the_outage(5).await;
        let burn: Vec<Value> = prom
            .alerts("SessiongateAvailabilityBudgetBurn")
            .await
            .into_iter()
            .filter(|a| a["labels"]["severity"] == "page")
            .collect();
        let store = prom.alerts("SessiongateStoreUnavailable").await;
        if !burn.is_empty() && !store.is_empty() {
            break (burn, store);
        }
        assert!(Instant::now() < deadline, "the page never went pending: burn {burn:?}, store {store:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // (Pending: the page fires after its `for`, with these same labels.)
    for alert in burn.iter().chain(&store) {
        assert!(matches!(alert["state"].as_str(), Some("pending" | "firing")), "{alert}");
        assert_eq!(alert["labels"]["cluster"], "test-cluster", "{alert}");
        assert_eq!(alert["labels"]["job"], "sessiongate", "{alert}");
        assert!(
            alert["annotations"]["runbook_url"].as_str().is_some_and(|u| u.starts_with("https://")),
            "{alert}"
        );
    }
    assert_eq!(namespaces_of(&burn), ["staging"], "only staging pages for its budget: {burn:?}");
    assert_eq!(namespaces_of(&store), ["staging"], "only staging's store is down: {store:?}");
    assert!(
        burn[0]["annotations"]["summary"].as_str().unwrap().contains("test-cluster/staging"),
        "the page says where: {}",
        burn[0]["annotations"]["summary"]
    );
    // Every alert of any kind that names prod is not about availability or the store.
    let all = prom.api("/api/v1/alerts", &[]).await;
    for alert in all["alerts"].as_array().unwrap() {
        if alert["labels"]["namespace"] == "prod" {
            let name = alert["labels"]["alertname"].as_str().unwrap();
            assert!(
                !["SessiongateAvailabilityBudgetBurn", "SessiongateStoreUnavailable"].contains(&name),
                "prod is healthy: {alert}"
            );
        }
    }
    // The SLO rules keep the two apart: staging's 5m ratio is over the
    // page's threshold, prod's is 0.
    let ratio = |ns: &str| {
        format!(
            "sessiongate:slo_availability_errors:ratio_rate5m{{cluster=\"test-cluster\", namespace=\"{ns}\"}}"
        )
    };
    let value = |v: &Vec<Value>| -> f64 { v[0]["value"][1].as_str().unwrap().parse().unwrap() };
    assert_eq!(value(&prom.query(&ratio("prod")).await), 0.0);
    assert!(value(&prom.query(&ratio("staging")).await) > 14.4 * 0.001);

    // Every panel's every query has data, for prod alone (a namespace
    // chosen) and for every namespace (All).
    let mut empty = Vec::new();
    let mut count = 0;
    for (file, d) in dashboards() {
        for (panel, expr) in queries(&d) {
            for namespace in ["prod", ".*"] {
                count += 1;
                let sent = as_grafana_sends_it(&expr, namespace);
                if prom.query(&sent).await.is_empty() {
                    empty.push(format!("{file}: {panel}: {sent}"));
                }
            }
        }
        // The annotations: deploys (every version is new in the first five
        // minutes) for each namespace, and the alerts, which show staging's
        // once they fire (here, pending: the same series with alertstate
        // "pending").
        for a in d["annotations"]["list"].as_array().unwrap() {
            let Some(expr) = a["expr"].as_str() else { continue };
            for namespace in ["prod", "staging"] {
                let sent = as_grafana_sends_it(expr, namespace)
                    .replace("alertstate=\"firing\"", "alertstate=~\"pending|firing\"");
                let found = prom.query(&sent).await;
                if expr.starts_with("ALERTS") && namespace == "prod" {
                    assert!(
                        found.iter().all(|s| ![
                            "SessiongateAvailabilityBudgetBurn",
                            "SessiongateStoreUnavailable"
                        ]
                        .contains(&s["metric"]["alertname"].as_str().unwrap())),
                        "{file}: annotation {sent}: {found:?}"
                    );
                } else {
                    assert!(!found.is_empty(), "{file}: annotation {sent} found nothing");
                }
            }
        }
    }
    assert!(count >= 60, "only {count} queries in the dashboards");
    assert!(empty.is_empty(), "queries with no data:\n{}", empty.join("\n"));
}

/// Runbooks name dashboard panels in italics (`**Dashboard** → *Panel*`):
/// every one must exist, so a renamed panel cannot strand on-call.
#[test]
fn every_panel_a_runbook_names_exists() {
    let titles: HashSet<String> = dashboards()
        .iter()
        .flat_map(|(_, d)| panels(d).into_iter().filter_map(|p| p["title"].as_str().map(str::to_string)))
        .collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("deploy/runbooks")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace("**", "\u{0}");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for (i, part) in text.split('*').enumerate() {
            if i % 2 == 1 {
                assert!(titles.contains(part), "{}: no panel is titled {part:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} panel references");
}
