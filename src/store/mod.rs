//! Implementations of `sessions::SessionStore`, and the one place that picks
//! one from config. Nothing here knows about HTTP.

pub mod memory;

use crate::config::{StoreBackend, StoreConfig};
use crate::sessions::SessionStore;
use std::sync::Arc;

pub use memory::MemoryStore;

/// The backend named by config.
pub async fn build(config: &StoreConfig) -> anyhow::Result<Arc<dyn SessionStore>> {
    match config.backend {
        StoreBackend::Memory => Ok(Arc::new(MemoryStore::new())),
    }
}
