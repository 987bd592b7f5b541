//! What Prometheus and on-call engineers see: bounded labels, route templates,
//! series initialised at zero, build info, and the OpenAPI document.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn http_metrics_are_labelled_by_route_template_never_by_raw_path() {
    let app = spawn_app().await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let id = s["id"].as_str().unwrap();
    app.get(&alice, &format!("/v1/sessions/{id}")).await;
    app.client.get(app.url("/some/random/path")).send().await.unwrap();
    let text = app.metrics().await;
    assert!(text.contains(
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/v1/sessions/{id}",http_response_status_code="200"} 1"#
    ), "{text}");
    assert!(text.contains(r#"http_route="unmatched",http_response_status_code="404""#));
    assert!(!text.contains(id), "no session id in any label");
    assert!(!text.contains("alice"), "no user id in any label");
    assert!(!text.contains("/some/random/path"), "no raw path in any label");
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"), "buckets, not a summary");
    assert!(text.contains(r#"le="0.0005""#));
}

#[tokio::test]
async fn known_series_start_at_zero_and_build_info_is_one() {
    let app = spawn_app().await;
    let text = app.metrics().await;
    for series in [
        r#"sessiongate_sessions_created_total{tool_set="coding"} 0"#,
        r#"sessiongate_sessions_ended_total{reason="deleted"} 0"#,
        r#"sessiongate_sessions_ended_total{reason="expired"} 0"#,
        r#"sessiongate_sessions_ended_total{reason="evicted"} 0"#,
        r#"sessiongate_sessions_ended_total{reason="revoked"} 0"#,
        r#"sessiongate_session_limit_hits_total{action="rejected"} 0"#,
        r#"sessiongate_session_limit_hits_total{action="evicted"} 0"#,
        r#"sessiongate_session_migrations_total{from_tool_set="general",to_tool_set="coding"} 0"#,
        r#"sessiongate_session_heartbeats_total 0"#,
        r#"sessiongate_auth_failures_total{reason="bad_signature"} 0"#,
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    let build = text.lines().find(|l| l.starts_with("sessiongate_build_info{")).expect("build info");
    assert!(build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))), "{build}");
    assert!(build.contains(r#"store_backend="memory""#) && build.ends_with(" 1"), "{build}");
    assert!(text.contains("# HELP sessiongate_sessions_ended_total Sessions ended, by reason"));
}

#[tokio::test]
async fn every_session_series_moves_with_the_workload() {
    let app = spawn_app_with("[sessions]\nmax_per_user = 1").await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    let base = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
    app.post(&alice, &format!("{base}/heartbeat"), json!({})).await;
    app.post(&alice, &format!("{base}/queries"), json!({"input": "x"})).await;
    app.patch(&alice, &base, json!({"tool_set": "coding"})).await;
    app.create_ok(&alice, "general").await; // evicts the first
    let checks = [
        (r#"sessiongate_sessions_created_total{tool_set="general"}"#, 2.0),
        (r#"sessiongate_sessions_ended_total{reason="evicted"}"#, 1.0),
        (r#"sessiongate_session_lifetime_seconds_count{reason="evicted"}"#, 1.0),
        (r#"sessiongate_session_migrations_total{from_tool_set="general",to_tool_set="coding"}"#, 1.0),
        ("sessiongate_session_heartbeats_total", 1.0),
        (r#"sessiongate_session_limit_hits_total{action="evicted"}"#, 1.0),
        (r#"sessiongate_agent_query_duration_seconds_count{tool_set="general",outcome="ok"}"#, 1.0),
        (r#"http_server_active_requests{http_request_method="GET"}"#, 1.0),
    ];
    for (series, want) in checks {
        assert_eq!(app.metric(series).await, Some(want), "{series}");
    }
}

#[tokio::test]
async fn metrics_can_have_their_own_listener() {
    let app = spawn_app_with("[server]\nmetrics_listen = \"127.0.0.1:0\"").await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "not on the main listener");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/tool-sets", "get"),
        ("/v1/sessions", "post"),
        ("/v1/sessions", "get"),
        ("/v1/sessions/{id}", "get"),
        ("/v1/sessions/{id}", "patch"),
        ("/v1/sessions/{id}", "delete"),
        ("/v1/sessions/{id}/heartbeat", "post"),
        ("/v1/sessions/{id}/queries", "post"),
        ("/v1/admin/sessions", "get"),
        ("/v1/admin/users/{user}/sessions", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn store_operations_and_the_process_are_measured() {
    let app = spawn_app().await;
    let alice = token("alice");
    let s = app.create_ok(&alice, "general").await;
    app.get(&alice, &format!("/v1/sessions/{}", s["id"].as_str().unwrap())).await;
    let text = app.metrics().await;
    for series in [
        r#"sessiongate_store_operation_duration_seconds_count{backend="memory",operation="create"} 1"#,
        r#"sessiongate_store_operation_duration_seconds_count{backend="memory",operation="get"} 1"#,
        r#"sessiongate_store_errors_total{backend="memory",operation="get"} 0"#,
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "missing {name}");
    }
}

/// The metrics table of the operations guide is the catalog: same names,
/// types and labels.
#[test]
fn the_operations_guide_metrics_table_matches_the_catalog() {
    use sessiongate::telemetry::catalog::{CATALOG, Kind};
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let section =
        guide.split("\n## Metrics\n").nth(1).expect("a Metrics section").split("\n## ").next().unwrap();
    let rows: Vec<(String, String, Vec<String>)> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let labels = cells[2]
                .split(',')
                .map(|s| s.trim().trim_matches('`').to_string())
                .filter(|s| !s.is_empty())
                .collect();
            (cells[0].trim_matches('`').to_string(), cells[1].to_string(), labels)
        })
        .collect();
    let expected: Vec<(String, String, Vec<String>)> = CATALOG
        .iter()
        .map(|d| {
            let kind = match d.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            (d.name.to_string(), kind.to_string(), d.labels.iter().map(|l| l.to_string()).collect())
        })
        .collect();
    let mut got = rows.clone();
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "docs/operations.md table vs telemetry::catalog::CATALOG");
}

/// A workload that moves every series (on Redis, with both limit layers and
/// an outage at the end); then every catalog metric is in the exposition,
/// the moved series moved, no label carries an id, and `promtool check
/// metrics` (Debian's prometheus package) finds nothing to say.
#[tokio::test]
async fn a_full_workload_exposes_every_catalog_metric_and_promtool_accepts_it() {
    use crate::workload::Workload;
    use sessiongate::telemetry::catalog::CATALOG;
    let mut wl = Workload::start().await;
    wl.round().await;
    let expired = r#"sessiongate_sessions_ended_total{reason="expired"}"#;
    assert!(
        eventually(Duration::from_secs(10), || async { wl.app.metric(expired).await.unwrap_or(0.0) >= 1.0 })
            .await,
        "the reaper ended the idle sessions"
    );
    wl.break_the_store().await;
    let down = r#"sessiongate_store_up{backend="redis"}"#;
    assert!(eventually(Duration::from_secs(10), || async { wl.app.metric(down).await == Some(0.0) }).await);

    let text = wl.app.metrics().await;
    for def in CATALOG {
        assert!(text.contains(&format!("# TYPE {} ", def.name)), "{} is not exposed", def.name);
    }
    for series in [
        r#"sessiongate_sessions_created_total{tool_set="general"}"#,
        r#"sessiongate_sessions_ended_total{reason="deleted"}"#,
        r#"sessiongate_sessions_ended_total{reason="evicted"}"#,
        r#"sessiongate_sessions_ended_total{reason="revoked"}"#,
        r#"sessiongate_sessions_ended_total{reason="expired"}"#,
        r#"sessiongate_session_lifetime_seconds_count{reason="expired"}"#,
        r#"sessiongate_session_migrations_total{from_tool_set="general",to_tool_set="coding"}"#,
        "sessiongate_session_heartbeats_total",
        r#"sessiongate_session_limit_hits_total{action="rejected"}"#,
        r#"sessiongate_session_limit_hits_total{action="evicted"}"#,
        r#"sessiongate_agent_query_duration_seconds_count{tool_set="general",outcome="ok"}"#,
        r#"sessiongate_auth_failures_total{reason="missing"}"#,
        r#"sessiongate_auth_failures_total{reason="malformed"}"#,
        r#"sessiongate_auth_failures_total{reason="bad_signature"}"#,
        r#"sessiongate_auth_failures_total{reason="forbidden"}"#,
        r#"sessiongate_ratelimit_decisions_total{policy="default",decision="allowed"}"#,
        r#"sessiongate_ratelimit_decisions_total{policy="session-create",decision="limited"}"#,
        r#"sessiongate_ratelimit_decisions_total{policy="catalog-shadow",decision="shadow_limited"}"#,
        r#"sessiongate_ratelimit_decisions_total{policy="per_ip",decision="limited"}"#,
        r#"sessiongate_ratelimit_store_errors_total{policy="default"}"#,
        r#"sessiongate_store_errors_total{backend="redis",operation="list"}"#,
        r#"sessiongate_store_operation_duration_seconds_count{backend="redis",operation="create"}"#,
        r#"sessiongate_config_changes_total{source="api"}"#,
        "sessiongate_reaper_last_sweep_timestamp_seconds",
        r#"http_server_request_duration_seconds_count{http_request_method="POST",http_route="/v1/sessions",http_response_status_code="429"}"#,
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/v1/sessions",http_response_status_code="503"}"#,
    ] {
        let value = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        assert!(value.is_some_and(|v| v > 0.0), "{series} did not move: {value:?}");
    }

    // Labels: no user id, session id, raw path, address or error text.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        for forbidden in ["wl-", "10.", "192.0.2.", "/nowhere", "not-a-jwt", "refused", "error:"] {
            assert!(!line.contains(forbidden), "{forbidden:?} in a label: {line}");
        }
        assert!(
            !line.split('"').any(|v| uuid::Uuid::parse_str(v).is_ok()),
            "a session id in a label: {line}"
        );
    }

    let check = promtool_check_metrics(&text);
    assert!(check.0, "promtool check metrics failed:\n{}", check.1);
    assert!(check.1.trim().is_empty(), "promtool has complaints:\n{}", check.1);
}

/// `promtool check metrics` on an exposition: (passed, what it printed).
fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// Without an exporter nothing is recorded, yet a problem still names the
/// trace it belongs to: the caller's, continued from `traceparent`, or a new
/// one (a malformed `traceparent` starts a new trace, per W3C).
#[tokio::test]
async fn problems_name_the_callers_trace_or_a_new_one() {
    let app = spawn_app().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    assert_eq!(body["trace_id"], trace);

    let mut seen = std::collections::HashSet::new();
    for traceparent in [None, Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), Some("junk")] {
        let mut r = app.client.get(app.url("/nowhere"));
        if let Some(tp) = traceparent {
            r = r.header("traceparent", tp);
        }
        let body = assert_problem(r.send().await.unwrap(), StatusCode::NOT_FOUND, "NOT_FOUND").await;
        let id = body["trace_id"].as_str().unwrap().to_string();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32), "{id}");
        assert!(seen.insert(id), "a new trace each time");
    }
}
