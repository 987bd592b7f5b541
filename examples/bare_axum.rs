//! The benchmark baseline: a bare axum 0.8 JSON handler on the same route
//! shape as `GET /v1/sessions/{id}`, returning a body of the same size. No
//! auth, no limits, no metrics, no tracing: what sessiongate is compared to
//! (`loadtest/bench.sh`). Not part of the product.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

async fn session(Path(id): Path<String>) -> Json<Value> {
    Json(json!({
        "id": id, "user_id": "bench", "tool_set": "general",
        "created_at": "2026-11-25T10:00:00.123Z", "last_active_at": "2026-11-25T10:00:00.123Z",
        "expires_at": "2026-11-25T10:30:00.123Z", "conversation_turns": 0, "migrations": 0
    }))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18090".into());
    let app = Router::new().route("/v1/sessions/{id}", get(session));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on {addr}");
    axum::serve(listener, app).await.expect("serve");
}
