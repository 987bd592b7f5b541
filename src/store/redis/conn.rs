//! One connection to Redis, single node or Cluster, shared by the session
//! store and the rate limiter.
//!
//! - Single node: our own pipelined connection ([`super::pipe`]), made on
//!   first use, so the server starts (unready) while Redis is down, and made
//!   again on the first use after it failed.
//! - Cluster: one such connection per node, and the slot map that routes
//!   each command ([`super::cluster`]).
//!
//! Every call is bounded by `store.command_timeout`. Losing and regaining
//! Redis (for a Cluster: any of its masters) is logged once each and shown
//! by `sessiongate_store_up`.

use super::cluster::Cluster;
use super::pipe::{Pipe, PipeRef};
use crate::config::StoreConfig;
use crate::telemetry::Events;
use redis::{Cmd, FromRedisValue, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis cluster: {0}")]
    Cluster(String),
}

/// `EVALSHA <hash> <number of keys> <keys>…` of `script`: the caller appends
/// the script's arguments (`Cmd::arg` writes each into the command's one
/// buffer) and runs it with [`Redis::eval`].
pub fn evalsha(script: &redis::Script, keys: &[&str]) -> Cmd {
    let mut cmd = Cmd::with_capacity(3 + keys.len() + 8, 128);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

pub struct Redis {
    backend: Backend,
    timeout: Duration,
    prefix: String,
    up: AtomicBool,
    events: Arc<Events>,
}

enum Backend {
    Single(Pipe),
    Cluster(Cluster),
}

impl Redis {
    pub fn new(config: &StoreConfig, events: Arc<Events>) -> anyhow::Result<Self> {
        let timeout = config.command_timeout;
        let info = |url: &str, key: &str| {
            redis::Client::open(url)
                .map(|c| c.get_connection_info().clone())
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))
        };
        let backend = if config.redis_cluster_urls.is_empty() {
            let pipe = Pipe::new(&info(config.redis_url.expose(), "store.redis_url")?)
                .map_err(|e| anyhow::anyhow!("store.redis_url: {e}"))?;
            Backend::Single(pipe)
        } else {
            let seeds = (config.redis_cluster_urls.iter())
                .map(|u| info(u.expose(), "store.redis_cluster_urls"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let cluster = Cluster::new(&seeds, timeout, events.clone())
                .map_err(|e| anyhow::anyhow!("store.redis_cluster_urls: {e}"))?;
            Backend::Cluster(cluster)
        };
        Ok(Self { backend, timeout, prefix: config.key_prefix.clone(), up: AtomicBool::new(true), events })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a user of this connection reports its own operations.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Run a script (EVALSHA, loading it on NOSCRIPT) within the command timeout.
    pub async fn script<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[Vec<u8>],
    ) -> Result<T, RedisFailure> {
        let mut cmd = evalsha(script, keys);
        for a in args {
            cmd.arg(a.as_slice());
        }
        self.eval(script, &cmd).await
    }

    /// Run an [`evalsha`] command of `script` within the command timeout,
    /// loading the script and sending the command again on NOSCRIPT (a
    /// restarted or new Redis).
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        cmd: &Cmd,
    ) -> Result<T, RedisFailure> {
        let pipe = match &self.backend {
            Backend::Single(pipe) => pipe,
            Backend::Cluster(cluster) => {
                return typed(cluster.query(cmd, Some(script), self.deadline()).await);
            }
        };
        let call = async {
            let mut conn = PipeRef(pipe);
            match cmd.query_async(&mut conn).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    script.load_async(&mut conn).await?;
                    Ok(cmd.query_async(&mut conn).await?)
                }
                reply => Ok::<T, RedisFailure>(reply?),
            }
        };
        self.observe(
            tokio::time::timeout(self.timeout, call)
                .await
                .unwrap_or(Err(RedisFailure::Timeout(self.timeout))),
        )
    }

    /// Run one command within the command timeout.
    pub async fn cmd<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisFailure> {
        let pipe = match &self.backend {
            Backend::Single(pipe) => pipe,
            Backend::Cluster(cluster) => return typed(cluster.query(cmd, None, self.deadline()).await),
        };
        let call = async { Ok::<T, RedisFailure>(cmd.query_async(&mut PipeRef(pipe)).await?) };
        self.observe(
            tokio::time::timeout(self.timeout, call)
                .await
                .unwrap_or(Err(RedisFailure::Timeout(self.timeout))),
        )
    }

    /// Start-up checks that tell a misconfiguration from an outage: a Cluster
    /// seed that answers but is not a cluster node is an error.
    pub async fn check_at_start(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Single(_) => Ok(()),
            Backend::Cluster(cluster) => {
                cluster.check_at_start(self.deadline()).await.map_err(anyhow::Error::msg)
            }
        }
    }

    /// Readiness: Redis answers `PING`; for a Cluster, every slot has a
    /// master and every master answers.
    pub async fn health(&self) -> Result<(), RedisFailure> {
        match &self.backend {
            Backend::Single(_) => match self.cmd::<String>(&redis::cmd("PING")).await? {
                pong if pong == "PONG" => Ok(()),
                other => Err(RedisFailure::Cluster(format!("PING answered {other:?}"))),
            },
            Backend::Cluster(cluster) => cluster.health(self.deadline()).await,
        }
    }

    /// `cmd`'s reply from every node that serves data: the one Redis, or each
    /// Cluster master.
    pub async fn on_every_node(&self, cmd: &Cmd) -> Result<Vec<Value>, RedisFailure> {
        match &self.backend {
            Backend::Single(_) => Ok(vec![self.cmd(cmd).await?]),
            Backend::Cluster(cluster) => cluster.on_every_master(cmd, self.deadline()).await,
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.timeout
    }

    /// Track availability from each outcome: log a loss and a recovery once.
    /// (A Cluster tracks each of its nodes itself.)
    fn observe<T>(&self, result: Result<T, RedisFailure>) -> Result<T, RedisFailure> {
        let unavailable = match &result {
            Ok(_) => false,
            Err(RedisFailure::Timeout(_) | RedisFailure::Cluster(_)) => true,
            Err(RedisFailure::Redis(e)) => {
                e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
            }
        };
        if result.is_ok() && !self.up.swap(true, Ordering::AcqRel) {
            self.events.store_availability("redis", true, None);
        } else if unavailable && self.up.swap(false, Ordering::AcqRel) {
            let why = result.as_ref().err().map(|e| e.to_string());
            self.events.store_availability("redis", false, why.as_deref());
        }
        result
    }
}

/// A Cluster reply as the caller's type (a server error as an error).
fn typed<T: FromRedisValue>(reply: Result<Value, RedisFailure>) -> Result<T, RedisFailure> {
    let value = reply?.extract_error()?;
    T::from_redis_value(value).map_err(|e| RedisFailure::Redis(e.into()))
}
