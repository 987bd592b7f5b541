//! Implementations of `sessions::SessionStore`, and the one place that picks
//! one from config. Nothing here knows about HTTP.

pub mod memory;
pub mod redis;

use crate::config::{StoreBackend, StoreConfig};
use crate::sessions::SessionStore;
use crate::telemetry::Events;
use std::sync::Arc;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// The chosen backend, and the Redis connection when there is one (the rate
/// limiter shares it).
pub struct Built {
    pub store: Arc<dyn SessionStore>,
    pub redis: Option<Arc<redis::Redis>>,
}

/// The backend named by config.
pub fn build(config: &StoreConfig, events: Arc<Events>) -> anyhow::Result<Built> {
    match config.backend {
        StoreBackend::Memory => Ok(Built { store: Arc::new(MemoryStore::new()), redis: None }),
        StoreBackend::Redis => {
            let conn = Arc::new(redis::Redis::new(config, events)?);
            Ok(Built { store: Arc::new(RedisStore::new(conn.clone())), redis: Some(conn) })
        }
    }
}
