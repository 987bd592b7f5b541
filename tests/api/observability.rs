//! What Prometheus and on-call engineers see: bounded labels, route templates,
//! series initialised at zero, build info, and the OpenAPI document.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

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

/// The README's metrics table is the catalog: same names, types and labels.
#[test]
fn the_readme_metrics_table_matches_the_catalog() {
    use sessiongate::telemetry::catalog::{CATALOG, Kind};
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section =
        readme.split("\n## Metrics\n").nth(1).expect("a Metrics section").split("\n## ").next().unwrap();
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
    assert_eq!(got, want, "README table vs telemetry::catalog::CATALOG");
}
