//! The OpenAPI 3.1 document: one path operation per row of the route table
//! (each handler's `#[utoipa::path]`), plus what the table's `Access` says
//! every gated route answers alike (401, 403 on admin routes, 429 with
//! `Retry-After` and the `RateLimit` headers, 503) and the headers every
//! answer carries (`X-Request-Id`; `RateLimit` and `RateLimit-Policy` on
//! gated routes). Built once at start-up, never per request.
//!
//! Knows the routes only through the table and nothing of what handlers or
//! the gate do; the shared answers here must say what the gate and the
//! envelope send (`tests/api/openapi.rs` holds them to it).

use super::routes::{Access, Row};
use super::{dto, problem};
use serde_json::{Map, Value, json};
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiongate",
        description = "Agent sessions for authenticated frontend clients.\n\n\
            Every answer carries `X-Request-Id` (the caller's, when it sent a sane one: \
            1-128 characters of `A-Za-z0-9-_.:`; else a new one), and every error is \
            RFC 9457 `application/problem+json` with a `code` from `ProblemCode`. \
            A W3C `traceparent` sent by the caller is continued.",
        license(name = "MIT", identifier = "MIT")
    ),
    servers((url = "/", description = "The server that serves this document")),
    components(schemas(
        dto::SessionView, dto::SessionList, dto::CreateSessionRequest, dto::MigrateSessionRequest,
        dto::QueryRequest, dto::QueryResponse, dto::ToolSetView, dto::ToolSetList, dto::RevokeResponse,
        dto::Health, dto::StoreHealth, problem::Problem, problem::ProblemCode, problem::FieldError
    )),
    modifiers(&Security),
    tags(
        (name = "sessions", description = "A user's agent sessions: open, switch, query, keep alive, close"),
        (name = "admin", description = "On-call levers: any user's sessions, runtime limits"),
        (name = "system", description = "Probes, metrics and this document")
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as pretty JSON, versioned like the crate, of no deployment
/// in particular (`sessiongate openapi`, the web client's types): the
/// `tool_set` fields are any string, since tool sets are configuration.
pub fn document_json() -> String {
    serde_json::to_string_pretty(&document(None)).expect("a JSON value renders")
}

/// The document a server with these tool sets serves: the `tool_set`
/// fields list them as their only valid values, so a client (or a
/// schema-driven fuzzer) knows exactly what is accepted.
pub fn document_json_for(tool_sets: &[String]) -> String {
    serde_json::to_string_pretty(&document(Some(tool_sets))).expect("a JSON value renders")
}

/// The document as a JSON value. Panics when a handler's annotation names
/// another method or path than its row: a bug every test meets.
pub fn document(tool_sets: Option<&[String]>) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut value = serde_json::to_value(&doc).expect("the document is JSON");
    let table = super::routes::table(true);
    let mut paths = Map::new();
    for row in &table.rows {
        let (method, operation) = operation(row);
        let item = paths.entry(row.template).or_insert_with(|| json!({}));
        item[method] = operation;
    }
    value["paths"] = Value::Object(paths);
    shared_components(&mut value);
    refine(&mut value, tool_sets);
    value
}

/// A row's operation, with the answers its access implies.
fn operation(row: &Row) -> (&'static str, Value) {
    let (methods, path, operation) = (row.doc)();
    let method = method_name(&row.method);
    assert_eq!(path, row.template, "the annotation of {} {} names another path", row.method, row.template);
    let annotated: Vec<&str> = methods.iter().map(http_method_name).collect();
    assert_eq!(annotated, [method], "the annotation of {} {} names another method", row.method, row.template);
    let mut operation = serde_json::to_value(operation).expect("an operation is JSON");
    let has_body = operation.get("requestBody").is_some();
    let responses = operation["responses"].as_object_mut().expect("every operation has responses");
    let gated = row.access != Access::Open;
    for response in responses.values_mut() {
        let headers =
            response.as_object_mut().expect("a response object").entry("headers").or_insert(json!({}));
        headers["X-Request-Id"] = reference("headers", "X-Request-Id");
    }
    // Every body meets the envelope's limit and the JSON extractor: the same
    // two answers (shared responses: they carry `X-Request-Id` already) wherever there is a body (a route's own words kept).
    if has_body {
        responses.entry("413").or_insert_with(|| reference("responses", "PayloadTooLarge"));
        responses.entry("415").or_insert_with(|| reference("responses", "UnsupportedMediaType"));
    }
    if gated {
        // An admitted request's answer reports the quota it spent.
        for (status, response) in responses.iter_mut() {
            if status.starts_with('2') {
                response["headers"]["RateLimit"] = reference("headers", "RateLimit");
                response["headers"]["RateLimit-Policy"] = reference("headers", "RateLimit-Policy");
            }
        }
        responses.insert("401".into(), reference("responses", "Unauthenticated"));
        if row.access == Access::Admin {
            responses.insert("403".into(), reference("responses", "Forbidden"));
        }
        // A route's own 429 (its codes named) keeps its words and gains the headers.
        match responses.get_mut("429") {
            Some(own) => {
                for name in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
                    own["headers"][name] = reference("headers", name);
                }
            }
            None => {
                responses.insert("429".into(), reference("responses", "TooManyRequests"));
            }
        }
        responses.insert("503".into(), reference("responses", "Unavailable"));
    }
    // Status codes in order, as a reader scans them.
    let mut sorted: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(sorted);
    (method, operation)
}

fn reference(kind: &str, name: &str) -> Value {
    json!({"$ref": format!("#/components/{kind}/{name}")})
}

fn method_name(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::PUT => "put",
        _ => panic!("{method}: a method the table does not route"),
    }
}

fn http_method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Patch => "patch",
        HttpMethod::Delete => "delete",
        HttpMethod::Put => "put",
        HttpMethod::Head => "head",
        HttpMethod::Options => "options",
        HttpMethod::Trace => "trace",
    }
}

/// The headers and answers the gated routes share.
fn shared_components(value: &mut Value) {
    let problem = |description: &str, headers: &[&str]| {
        let mut h = Map::new();
        for name in headers.iter().chain(&["X-Request-Id"]) {
            h.insert(name.to_string(), reference("headers", name));
        }
        json!({
            "description": description,
            "headers": h,
            "content": {"application/problem+json": {"schema": reference("schemas", "Problem")}},
        })
    };
    let components = value["components"].as_object_mut().expect("components");
    components.insert(
        "headers".into(),
        json!({
            "X-Request-Id": {
                "description": "This exchange's id: the caller's `X-Request-Id` when sane \
                                (1-128 characters of `A-Za-z0-9-_.:`), else a new one. \
                                Also the `request_id` of a problem body.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            },
            "Retry-After": {
                "description": "Whole seconds to wait before retrying; a retry after that long is not \
                                refused for the same reason (never early).",
                "schema": {"type": "integer", "minimum": 0},
            },
            "RateLimit": {
                "description": "The most constrained policy's state (draft-ietf-httpapi-ratelimit-headers): \
                                remaining `r`, seconds to reset `t`, e.g. `\"default\";r=42;t=17`.",
                "schema": {"type": "string"},
            },
            "RateLimit-Policy": {
                "description": "Every policy that applies to this route: quota `q`, window `w` in seconds, \
                                e.g. `\"burst\";q=10;w=1, \"default\";q=600;w=60`.",
                "schema": {"type": "string"},
            },
            "WWW-Authenticate": {
                "description": "RFC 6750 challenge: `Bearer realm=\"sessiongate\"`, with \
                                `error=\"invalid_token\"` when a token failed a check.",
                "schema": {"type": "string"},
            },
        }),
    );
    components.insert(
        "responses".into(),
        json!({
            "Unauthenticated": problem(
                "UNAUTHENTICATED: no credentials, or a token or API key that failed a check",
                &["WWW-Authenticate"],
            ),
            "Forbidden": problem("FORBIDDEN: the principal lacks the admin role", &["RateLimit", "RateLimit-Policy"]),
            "TooManyRequests": problem(
                "RATE_LIMITED: a rate-limit policy (or the per-IP limit) refused the request; \
                 wait `Retry-After` seconds",
                &["Retry-After", "RateLimit", "RateLimit-Policy"],
            ),
            "PayloadTooLarge": problem("PAYLOAD_TOO_LARGE: the body exceeds `server.max_body_bytes`", &[]),
            "UnsupportedMediaType": problem("MALFORMED_REQUEST: the body is not `application/json`", &[]),
            "Unavailable": problem(
                "STORE_UNAVAILABLE (storage unreachable) or OVERLOADED (too many requests in flight); \
                 retry after `Retry-After` seconds",
                &["Retry-After"],
            ),
        }),
    );
}

/// What the annotations cannot say: the configured tool sets as the only
/// valid values, patterns, the links from a created session.
fn refine(value: &mut Value, tool_sets: Option<&[String]>) {
    let schemas = &mut value["components"]["schemas"];
    if let Some(tool_sets) = tool_sets {
        for schema in ["CreateSessionRequest", "MigrateSessionRequest"] {
            if let Some(field) = schemas.pointer_mut(&format!("/{schema}/properties/tool_set")) {
                field["enum"] = json!(tool_sets);
            }
        }
        if let Some(field) = schemas.pointer_mut("/Problem/properties/valid_tool_sets/items") {
            field["enum"] = json!(tool_sets);
        }
    }
    if let Some(input) = schemas.pointer_mut("/QueryRequest/properties/input") {
        // Not blank: at least one character that is not white space, as the
        // server decides it (Unicode White_Space, Rust's `char::is_whitespace`;
        // a regex's `\s` differs between dialects).
        input["minLength"] = 1.into();
        input["pattern"] =
            r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]".into();
    }
    // Links from a created session to what can be done with it (OpenAPI
    // 3.1 `links`: clients and stateful fuzzers follow them).
    if let Some(created) = value.pointer_mut("/paths/~1v1~1sessions/post/responses/201") {
        let link = |op: &str| json!({"operationId": op, "parameters": {"id": "$response.body#/id"}});
        created["links"] = json!({
            "GetSession": link("get_session"),
            "MigrateSession": link("migrate_session"),
            "Heartbeat": link("heartbeat"),
            "Query": link("query"),
            "DeleteSession": link("delete_session"),
        });
    }
    // The admin listing's `user` may not be empty.
    if let Some(params) =
        value.pointer_mut("/paths/~1v1~1admin~1sessions/get/parameters").and_then(|p| p.as_array_mut())
    {
        for p in params.iter_mut().filter(|p| p["name"] == "user") {
            p["schema"]["minLength"] = 1.into();
        }
    }
    // What `Idempotency-Key` may hold (a malformed one is a 400).
    if let Some(params) =
        value.pointer_mut("/paths/~1v1~1sessions/post/parameters").and_then(|p| p.as_array_mut())
    {
        for p in params.iter_mut().filter(|p| p["name"] == "Idempotency-Key") {
            p["schema"] = json!({"type": "string", "pattern": "^[!-~]{1,255}$"});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(Some(&["general".to_string(), "research".to_string()]))
    }

    #[test]
    fn every_row_is_a_path_operation_and_nothing_else_is() {
        let doc = doc();
        let mut documented: Vec<String> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        let mut rows: Vec<String> = super::super::routes::table(true)
            .rows
            .iter()
            .map(|r| format!("{} {}", r.method, r.template))
            .collect();
        documented.sort();
        rows.sort();
        assert_eq!(documented, rows);
    }

    #[test]
    fn every_gated_operation_documents_401_429_and_503_and_every_response_a_description() {
        let doc = doc();
        let components = &doc["components"]["responses"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                if path.starts_with("/v1/") {
                    for status in ["401", "429", "503"] {
                        assert!(responses.contains_key(status), "{method} {path}: no {status}");
                    }
                    let too_many = &responses["429"];
                    let too_many = match too_many["$ref"].as_str() {
                        Some(r) => &components[r.rsplit('/').next().unwrap()],
                        None => too_many,
                    };
                    for header in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
                        assert!(
                            too_many["headers"].get(header).is_some(),
                            "{method} {path}: 429 lacks {header}"
                        );
                    }
                }
                if path.starts_with("/v1/admin/") {
                    assert!(responses.contains_key("403"), "{method} {path}: no 403");
                }
                for (status, response) in responses {
                    if response.get("$ref").is_some() {
                        continue;
                    }
                    let description = response["description"].as_str().unwrap_or("");
                    assert!(!description.is_empty(), "{method} {path} {status}: no description");
                    assert!(response["headers"].get("X-Request-Id").is_some(), "{method} {path} {status}");
                }
            }
        }
    }

    #[test]
    fn problem_codes_are_an_enum_and_the_tool_sets_are_listed() {
        let doc = doc();
        let codes: Vec<&str> = doc["components"]["schemas"]["ProblemCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let all: Vec<&str> = problem::ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes, all);
        for code in ["OVERLOADED", "RATE_LIMITED", "MAX_SESSIONS_EXCEEDED", "UNKNOWN_TOOL_SET"] {
            assert!(codes.contains(&code), "{code}");
        }
        assert_eq!(
            doc["components"]["schemas"]["Problem"]["properties"]["valid_tool_sets"]["items"]["enum"],
            json!(["general", "research"])
        );
        // Of no deployment: any name, not an empty list that would refuse all.
        let generic = document(None);
        assert!(
            generic.pointer("/components/schemas/CreateSessionRequest/properties/tool_set/enum").is_none()
        );
    }
}
