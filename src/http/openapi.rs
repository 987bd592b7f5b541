//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use super::{dto, handlers, problem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "sessiongate", description = "Agent sessions for authenticated frontend clients."),
    paths(
        handlers::list_tool_sets,
        handlers::create_session,
        handlers::list_sessions,
        handlers::get_session,
        handlers::migrate_session,
        handlers::heartbeat,
        handlers::query,
        handlers::delete_session,
        handlers::admin_list_sessions,
        handlers::admin_revoke_user,
        handlers::admin_get_config,
        handlers::admin_patch_config,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::openapi,
    ),
    components(schemas(
        dto::SessionView, dto::SessionList, dto::CreateSessionRequest, dto::MigrateSessionRequest,
        dto::QueryRequest, dto::QueryResponse, dto::ToolSetView, dto::ToolSetList, dto::RevokeResponse,
        dto::Health, dto::StoreHealth, problem::Problem
    )),
    modifiers(&Security),
    tags((name = "sessions"), (name = "admin"), (name = "system"))
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

/// The document as pretty JSON, versioned like the crate, for the default
/// tool sets.
pub fn document_json() -> String {
    let defaults = crate::sessions::ToolSets::from_config(&[]);
    let names: Vec<String> = defaults.names().iter().map(|n| n.to_string()).collect();
    document_json_for(&names)
}

/// The document for a server with these tool sets: the `tool_set` fields
/// list them as their only valid values, so a client (or a schema-driven
/// fuzzer) knows exactly what is accepted.
pub fn document_json_for(tool_sets: &[String]) -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let Ok(mut value) = serde_json::to_value(&doc) else { return "{}".into() };
    let schemas = &mut value["components"]["schemas"];
    for schema in ["CreateSessionRequest", "MigrateSessionRequest"] {
        if let Some(field) = schemas.pointer_mut(&format!("/{schema}/properties/tool_set")) {
            field["enum"] = serde_json::json!(tool_sets);
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
        let link =
            |op: &str| serde_json::json!({"operationId": op, "parameters": {"id": "$response.body#/id"}});
        created["links"] = serde_json::json!({
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
            p["schema"] = serde_json::json!({"type": "string", "pattern": "^[!-~]{1,255}$"});
        }
    }
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into())
}
