//! The route table: every route once, as method, template, who may call it,
//! handler and the handler's OpenAPI operation. From it come axum's router
//! (which extracts the path parameters and calls the handler), the
//! envelope's own lookup of a request's route template and access, made
//! before the router runs (the template is the `http.route` of spans,
//! metrics and logs), the routes rate-limit policies may name
//! (`limitable_routes`), and the paths of the OpenAPI document with the
//! answers every gated route shares (`openapi`). A new endpoint is a handler
//! and one row here.
//!
//! Why a lookup of our own and not axum's `MatchedPath`: axum knows the
//! matched route only inside the router, so the envelope and the gate would
//! have to be per-route layers, and every layer wraps every route in one more
//! boxed service that is cloned, boxed again and called per request. Knows
//! nothing of what the handlers or the gate do.

use super::AppState;
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use std::sync::OnceLock;
use utoipa::openapi::path::{HttpMethod, Operation};

/// Who may call a route; the gate checks it before the router runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, readiness, the OpenAPI document, metrics.
    Open,
    /// An authenticated principal, after the per-IP and per-principal limits.
    Authenticated,
    /// As `Authenticated`, and the principal has the admin role (else 403).
    Admin,
}

/// A request's route: its template and who may call it. Every method of a
/// path shares one (a wrong method is a 405 after the gate, so an
/// unauthenticated caller learns nothing about the methods a route has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub template: &'static str,
    pub access: Access,
}

/// The envelope's lookup: path → route. The same matcher (matchit) and the
/// same templates as axum's router, so both always agree on what matched.
pub struct Routes(matchit::Router<RouteInfo>);

impl Routes {
    /// The route of a request path, or `None` (a 404 from the router).
    pub fn find(&self, path: &str) -> Option<RouteInfo> {
        self.0.at(path).ok().map(|m| *m.value)
    }
}

/// One row of the table, as the OpenAPI document and the rate limiter see it.
pub struct Row {
    pub method: Method,
    pub template: &'static str,
    pub access: Access,
    /// The handler's `#[utoipa::path]`: its method, path and operation.
    pub doc: fn() -> (Vec<HttpMethod>, String, Operation),
}

/// `P`'s part of the document, for a row's `doc`.
fn doc<P: utoipa::Path>() -> (Vec<HttpMethod>, String, Operation) {
    (P::methods(), P::path(), P::operation())
}

/// Every view of the table, built row by row.
pub struct Table {
    pub router: Router<AppState>,
    pub routes: Routes,
    /// Every row, in order.
    pub rows: Vec<Row>,
}

impl Table {
    fn new() -> Self {
        Table { router: Router::new(), routes: Routes(matchit::Router::new()), rows: Vec::new() }
    }

    /// One method of one path. Panics on a table that contradicts itself
    /// (a path with two accesses, or a template matchit refuses): a bug
    /// found at startup, by every test.
    fn add<H, T>(
        mut self,
        method: Method,
        template: &'static str,
        access: Access,
        handler: H,
        doc: fn() -> (Vec<HttpMethod>, String, Operation),
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
        self.router = self.router.route(template, on(filter, handler));
        match self.routes.0.at(template) {
            Ok(m) if m.value.template == template => {
                assert_eq!(m.value.access, access, "{template}: one access for every method of a path");
            }
            _ => self
                .routes
                .0
                .insert(template, RouteInfo { template, access })
                .unwrap_or_else(|e| panic!("{template}: {e}")),
        }
        self.rows.push(Row { method, template, access, doc });
        self
    }
}

/// Every route. `/metrics` only when `serve_metrics` (it may have a
/// listener of its own).
pub fn table(serve_metrics: bool) -> Table {
    use super::handlers::*;
    use Access::{Admin, Authenticated, Open};
    let t = Table::new()
        .add(Method::GET, "/v1/tool-sets", Authenticated, list_tool_sets, doc::<__path_list_tool_sets>)
        .add(Method::POST, "/v1/sessions", Authenticated, create_session, doc::<__path_create_session>)
        .add(Method::GET, "/v1/sessions", Authenticated, list_sessions, doc::<__path_list_sessions>)
        .add(Method::GET, "/v1/sessions/{id}", Authenticated, get_session, doc::<__path_get_session>)
        .add(
            Method::PATCH,
            "/v1/sessions/{id}",
            Authenticated,
            migrate_session,
            doc::<__path_migrate_session>,
        )
        .add(Method::DELETE, "/v1/sessions/{id}", Authenticated, delete_session, doc::<__path_delete_session>)
        .add(Method::POST, "/v1/sessions/{id}/heartbeat", Authenticated, heartbeat, doc::<__path_heartbeat>)
        .add(Method::POST, "/v1/sessions/{id}/queries", Authenticated, query, doc::<__path_query>)
        .add(Method::GET, "/v1/admin/sessions", Admin, admin_list_sessions, doc::<__path_admin_list_sessions>)
        .add(
            Method::DELETE,
            "/v1/admin/users/{user}/sessions",
            Admin,
            admin_revoke_user,
            doc::<__path_admin_revoke_user>,
        )
        .add(Method::GET, "/v1/admin/config", Admin, admin_get_config, doc::<__path_admin_get_config>)
        .add(Method::PATCH, "/v1/admin/config", Admin, admin_patch_config, doc::<__path_admin_patch_config>)
        .add(Method::GET, "/healthz", Open, healthz, doc::<__path_healthz>)
        .add(Method::GET, "/readyz", Open, readyz, doc::<__path_readyz>)
        .add(Method::GET, "/openapi.json", Open, openapi, doc::<__path_openapi>);
    if serve_metrics { t.add(Method::GET, "/metrics", Open, metrics, doc::<__path_metrics>) } else { t }
}

/// Every gated row as `METHOD /template`: the routes rate-limit policies
/// may name. Built once per process (the strings live as long as it does).
pub fn limitable_routes() -> &'static [&'static str] {
    static ROUTES: OnceLock<Vec<&'static str>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        table(true)
            .rows
            .iter()
            .filter(|row| row.access != Access::Open)
            .map(|row| &*Box::leak(format!("{} {}", row.method, row.template).into_boxed_str()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limitable_routes_are_the_gated_rows() {
        assert_eq!(
            limitable_routes(),
            [
                "GET /v1/tool-sets",
                "POST /v1/sessions",
                "GET /v1/sessions",
                "GET /v1/sessions/{id}",
                "PATCH /v1/sessions/{id}",
                "DELETE /v1/sessions/{id}",
                "POST /v1/sessions/{id}/heartbeat",
                "POST /v1/sessions/{id}/queries",
                "GET /v1/admin/sessions",
                "DELETE /v1/admin/users/{user}/sessions",
                "GET /v1/admin/config",
                "PATCH /v1/admin/config",
            ]
        );
    }

    #[test]
    fn lookups_find_templates_and_nothing_else() {
        let t = table(false);
        let get = |p| t.routes.find(p).map(|r| (r.template, r.access));
        assert_eq!(get("/v1/sessions/abc"), Some(("/v1/sessions/{id}", Access::Authenticated)));
        assert_eq!(get("/v1/sessions"), Some(("/v1/sessions", Access::Authenticated)));
        assert_eq!(
            get("/v1/admin/users/u1/sessions"),
            Some(("/v1/admin/users/{user}/sessions", Access::Admin))
        );
        assert_eq!(get("/healthz"), Some(("/healthz", Access::Open)));
        assert_eq!(get("/metrics"), None, "not on this listener");
        assert_eq!(get("/v1/sessions/abc/other"), None);
        assert_eq!(get("/v1/sessions/"), None);
        assert_eq!(get("/"), None);
    }
}
