//! One connection to Redis, single node or Cluster, shared by the session
//! store and the rate limiter.
//!
//! - Single node: our own pipelined connection ([`super::pipe`]), made on
//!   first use, so the server starts (unready) while Redis is down, and made
//!   again on the first use after it failed.
//! - Cluster: redis-rs's cluster connection, established on first use and
//!   retried on later uses until it succeeds; it follows slot moves itself.
//!
//! Every call is bounded by `store.command_timeout`. Losing and regaining
//! Redis is logged once each and shown by `sessiongate_store_up`.

use super::pipe::{Pipe, PipeRef};
use crate::config::StoreConfig;
use crate::telemetry::Events;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

enum Conn<'a> {
    Single(PipeRef<'a>),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
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
    single: Option<Pipe>,
    cluster: Option<(redis::cluster::ClusterClient, tokio::sync::OnceCell<ClusterConnection>)>,
    timeout: Duration,
    prefix: String,
    up: AtomicBool,
    events: Arc<Events>,
}

impl Redis {
    pub fn new(config: &StoreConfig, events: Arc<Events>) -> anyhow::Result<Self> {
        let timeout = config.command_timeout;
        let (single, cluster) = if config.redis_cluster_urls.is_empty() {
            let client = redis::Client::open(config.redis_url.expose())
                .map_err(|e| anyhow::anyhow!("store.redis_url: {e}"))?;
            let pipe = Pipe::new(client.get_connection_info())
                .map_err(|e| anyhow::anyhow!("store.redis_url: {e}"))?;
            (Some(pipe), None)
        } else {
            let nodes: Vec<&str> = config.redis_cluster_urls.iter().map(|u| u.expose()).collect();
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(|e| anyhow::anyhow!("store.redis_cluster_urls: {e}"))?;
            (None, Some((client, tokio::sync::OnceCell::new())))
        };
        Ok(Self {
            single,
            cluster,
            timeout,
            prefix: config.key_prefix.clone(),
            up: AtomicBool::new(true),
            events,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a user of this connection reports its own operations.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    async fn conn(&self) -> Result<Conn<'_>, RedisFailure> {
        if let Some(pipe) = &self.single {
            return Ok(Conn::Single(PipeRef(pipe)));
        }
        let (client, cell) = self.cluster.as_ref().expect("single or cluster");
        let c = cell.get_or_try_init(|| async { client.get_async_connection().await }).await?;
        Ok(Conn::Cluster(c.clone()))
    }

    /// Run a script (EVALSHA, loading it on NOSCRIPT) within the command timeout.
    pub async fn script<T: redis::FromRedisValue>(
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
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        cmd: &Cmd,
    ) -> Result<T, RedisFailure> {
        let call = async {
            let mut conn = self.conn().await?;
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
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisFailure> {
        let call = async {
            let mut conn = self.conn().await?;
            Ok::<T, RedisFailure>(cmd.query_async(&mut conn).await?)
        };
        self.observe(
            tokio::time::timeout(self.timeout, call)
                .await
                .unwrap_or(Err(RedisFailure::Timeout(self.timeout))),
        )
    }

    /// Track availability from each outcome: log a loss and a recovery once.
    fn observe<T>(&self, result: Result<T, RedisFailure>) -> Result<T, RedisFailure> {
        let unavailable = match &result {
            Ok(_) => false,
            Err(RedisFailure::Timeout(_)) => true,
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
