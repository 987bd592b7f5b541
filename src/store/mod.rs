//! Implementations of `sessions::SessionStore`, and the one place that picks
//! one from config. Nothing here knows about HTTP.

pub mod instrumented;
pub mod memory;
pub mod overrides;
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
    pub overrides: Arc<dyn overrides::OverridesStore>,
}

/// The backend named by config. `wall_clock`: the callers' times are real
/// time readings, which a shared store may bound by its own clock.
pub fn build(config: &StoreConfig, events: Arc<Events>, wall_clock: bool) -> anyhow::Result<Built> {
    match config.backend {
        StoreBackend::Memory => Ok(Built {
            store: Arc::new(instrumented::Instrumented::new(Arc::new(MemoryStore::new()), events)),
            redis: None,
            overrides: if config.overrides_file.is_empty() {
                Arc::new(overrides::InProcess::default())
            } else {
                Arc::new(overrides::File::new(&config.overrides_file))
            },
        }),
        StoreBackend::Redis => {
            let conn = Arc::new(redis::Redis::new(config, events.clone())?);
            Ok(Built {
                store: Arc::new(instrumented::Instrumented::new(
                    Arc::new(RedisStore::new(conn.clone()).bounding_wall_clocks(wall_clock)),
                    events,
                )),
                overrides: Arc::new(overrides::InRedis::new(conn.clone())),
                redis: Some(conn),
            })
        }
    }
}
