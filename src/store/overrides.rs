//! Where runtime config overrides persist: a file (memory backend, written
//! atomically: temporary file, fsync, rename) or Redis (one key under the
//! prefix, with a version every replica watches).

use crate::sessions::StoreError;
use crate::store::redis::Redis;
use async_trait::async_trait;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// Saved overrides and their version (0 when none were ever saved).
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub version: u64,
    pub overrides: Value,
}

#[async_trait]
pub trait OverridesStore: Send + Sync + 'static {
    async fn load(&self) -> Result<Saved, StoreError>;
    /// Save if the saved version is still `expected`; the new version, or
    /// `None` when another writer got there first (reload and retry).
    async fn save(&self, overrides: &Value, expected: u64) -> Result<Option<u64>, StoreError>;
    /// Whether other processes may change it (then it is watched).
    fn shared(&self) -> bool;
}

/// No persistence: changes last until the process ends.
#[derive(Default)]
pub struct InProcess(parking_lot::Mutex<Option<Saved>>);

#[async_trait]
impl OverridesStore for InProcess {
    async fn load(&self) -> Result<Saved, StoreError> {
        Ok(self
            .0
            .lock()
            .clone()
            .unwrap_or(Saved { version: 0, overrides: Value::Object(Default::default()) }))
    }

    async fn save(&self, overrides: &Value, expected: u64) -> Result<Option<u64>, StoreError> {
        let mut g = self.0.lock();
        let current = g.as_ref().map_or(0, |s| s.version);
        if current != expected {
            return Ok(None);
        }
        *g = Some(Saved { version: current + 1, overrides: overrides.clone() });
        Ok(Some(current + 1))
    }

    fn shared(&self) -> bool {
        false
    }
}

pub struct File {
    path: PathBuf,
}

impl File {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait]
impl OverridesStore for File {
    async fn load(&self) -> Result<Saved, StoreError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice::<OnDisk>(&bytes)
                .map(|s| Saved { version: s.version, overrides: s.overrides })
                .map_err(|e| StoreError::Internal(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Saved { version: 0, overrides: Value::Object(Default::default()) })
            }
            Err(e) => Err(StoreError::Unavailable(format!("{}: {e}", self.path.display()))),
        }
    }

    async fn save(&self, overrides: &Value, expected: u64) -> Result<Option<u64>, StoreError> {
        // One process writes this file (the memory backend is single-process).
        let current = self.load().await.map(|s| s.version).unwrap_or(0);
        if current != expected {
            return Ok(None);
        }
        let version = current + 1;
        let body = serde_json::to_vec_pretty(&OnDisk { version, overrides: overrides.clone() })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &body))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.path.display())))?;
        Ok(Some(version))
    }

    fn shared(&self) -> bool {
        false
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    version: u64,
    overrides: Value,
}

fn write_atomically(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // A sibling of its own (not `with_extension`: `x.tmp` would be the file
    // itself, and `a.json` and `a.toml` would share one).
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// In Redis under `<prefix>:config` (one key: one slot in a Cluster).
pub struct InRedis {
    redis: Arc<Redis>,
}

impl InRedis {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis }
    }

    fn key(&self) -> String {
        format!("{}:config", self.redis.prefix())
    }
}

#[async_trait]
impl OverridesStore for InRedis {
    async fn load(&self) -> Result<Saved, StoreError> {
        let (v, doc): (Option<u64>, Option<String>) = self
            .redis
            .cmd(redis::cmd("HMGET").arg(self.key()).arg("v").arg("doc"))
            .await
            .map_err(unavailable)?;
        let overrides = match doc {
            Some(d) => {
                serde_json::from_str(&d).map_err(|e| StoreError::Internal(format!("config in Redis: {e}")))?
            }
            None => Value::Object(Default::default()),
        };
        Ok(Saved { version: v.unwrap_or(0), overrides })
    }

    async fn save(&self, overrides: &Value, expected: u64) -> Result<Option<u64>, StoreError> {
        // Compare-and-set on the version: two replicas' PATCHes never overwrite each other.
        static SAVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if tonumber(redis.call('HGET', KEYS[1], 'v') or '0') ~= tonumber(ARGV[2]) then return -1 end
                 local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
                 redis.call('HSET', KEYS[1], 'doc', ARGV[1])
                 return v",
            )
        });
        let key = self.key();
        let args = [overrides.to_string().into_bytes(), expected.to_string().into_bytes()];
        let v: i64 = self.redis.script(&SAVE, &[&key], &args).await.map_err(unavailable)?;
        Ok((v >= 0).then_some(v as u64))
    }

    fn shared(&self) -> bool {
        true
    }
}

fn unavailable(e: crate::store::redis::RedisFailure) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
