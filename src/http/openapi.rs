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
        dto::Health, problem::Problem
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

/// The document as pretty JSON, versioned like the crate.
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_else(|_| "{}".into())
}
