//! Redis Cluster on our own pipelined connections: one [`Pipe`] per node,
//! and a slot map that is replaced whole when the cluster says it changed.
//!
//! Why not redis-rs's cluster connection: one driver task carries every
//! command, and it stops taking commands for all nodes while it repairs its
//! view of one. With redis-rs 1.8, a master killed under load left that
//! repair waiting for ever on a lock that a request it no longer polled had
//! queued for: every command to every node timed out until a restart
//! (`docs/architecture.md`, "Redis Cluster"). Here:
//!
//! - a command goes to its slot's master on that master's own connection, so
//!   a dead or hung node delays only the commands bound for it;
//! - the slot map is read without a lock and replaced whole by a refresh
//!   (`CLUSTER SLOTS`), asked of every known node and seed at once, the first
//!   good answer winning: dead seeds and dead masters cost no waiting;
//! - a refresh runs in the background, one at a time and at most one per
//!   `REFRESH_GAP`, whenever the cluster says it changed: `MOVED`, a node
//!   refusing or dropping the connection, a command timing out, `CLUSTERDOWN`;
//! - `MOVED` and `ASK` are followed at once (`ASKING` first, on the same
//!   connection), `TRYAGAIN` is retried after a pause, all within the
//!   caller's deadline; `NOSCRIPT` loads the script on that node;
//! - each node's reachability is tracked: the store is up while every master
//!   of the slot map answers and every slot has one, and losing or regaining
//!   a node, or a change of the slot map, is logged once.
//!
//! Must not know: what the commands mean, beyond where their key is.

use super::conn::RedisFailure;
use super::pipe::{Pipe, PipeRef};
use crate::telemetry::Events;
use arc_swap::ArcSwap;
use futures::stream::{FuturesUnordered, StreamExt};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, RedisError, ServerErrorKind, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The cluster's hash slots.
const SLOTS: usize = 16384;
/// A slot no master serves, in `Topology::slots`.
const UNCOVERED: u16 = u16::MAX;
/// The least time between the starts of two refreshes: while a node is down,
/// the map is asked for again this often (as long as traffic says so).
const REFRESH_GAP: Duration = Duration::from_millis(200);
/// Redirections followed for one command (a slot moved twice while we
/// followed it is already rare).
const MAX_REDIRECTS: usize = 5;
/// The pause before a command answered `TRYAGAIN` (a slot half migrated) is
/// sent again.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(10);

pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// The nodes named in `store.redis_cluster_urls`.
    seeds: Vec<String>,
    /// Credentials and database for every node (the first seed's).
    template: ConnectionInfo,
    timeout: Duration,
    topology: ArcSwap<Topology>,
    /// Every node we hold a connection to, by `host:port`: the slot map's,
    /// the seeds and redirect targets. Pruned to the map's and the seeds'
    /// at each refresh.
    nodes: parking_lot::Mutex<HashMap<String, Arc<Node>>>,
    /// A background refresh is scheduled or running.
    refreshing: AtomicBool,
    /// When the last refresh started, and the first load's single flight.
    last_refresh: parking_lot::Mutex<Option<Instant>>,
    first_load: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// The last refresh failed (its failure is logged once per streak).
    refresh_failing: AtomicBool,
    /// What `sessiongate_store_up` says now; held while it is worked out
    /// and changed, so two changes of node state cannot leave it stale.
    store_up: parking_lot::Mutex<bool>,
    events: Arc<Events>,
}

struct Node {
    addr: String,
    pipe: Pipe,
    /// The last command sent to it got an answer (or none was sent yet).
    up: AtomicBool,
}

/// The slot map: which master serves each slot. Empty until first loaded.
#[derive(Default)]
struct Topology {
    /// Per slot, an index into `masters`, or `UNCOVERED`.
    slots: Vec<u16>,
    masters: Vec<Arc<Node>>,
    /// Asked for the map too, when masters are gone.
    replicas: Vec<Arc<Node>>,
}

/// One entry of `CLUSTER SLOTS`: a range, its master and its replicas.
#[derive(Debug, Clone, PartialEq)]
struct Range {
    start: u16,
    end: u16,
    master: String,
    replicas: Vec<String>,
}

impl Cluster {
    pub fn new(seeds: &[ConnectionInfo], timeout: Duration, events: Arc<Events>) -> anyhow::Result<Self> {
        let template = seeds.first().cloned().ok_or_else(|| anyhow::anyhow!("no seed node"))?;
        let seeds = seeds.iter().map(address).collect::<anyhow::Result<Vec<_>>>()?;
        let inner = Inner {
            seeds,
            template,
            timeout,
            topology: ArcSwap::from_pointee(Topology::default()),
            nodes: Default::default(),
            refreshing: AtomicBool::new(false),
            last_refresh: Default::default(),
            first_load: Default::default(),
            refresh_failing: AtomicBool::new(false),
            store_up: parking_lot::Mutex::new(true),
            events,
        };
        // Every seed's connection must be one we can make (RESP2, no TLS).
        for seed in &inner.seeds {
            inner.node(seed)?;
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Send `cmd` to the master of its key's slot (any master when it has no
    /// key), following redirections, by `deadline`. `script`: the script an
    /// `EVALSHA` runs, loaded on the node that answers `NOSCRIPT`.
    pub async fn query(
        &self,
        cmd: &Cmd,
        script: Option<&redis::Script>,
        deadline: Instant,
    ) -> Result<Value, RedisFailure> {
        let inner = &self.inner;
        let topology = inner.loaded(deadline).await?;
        let mut node = match key_of(cmd) {
            Some(key) => topology.master_of(slot_of(key)).ok_or_else(|| {
                inner.refresh_soon();
                RedisFailure::Cluster(format!("slot {} is served by no node", slot_of(key)))
            })?,
            None => topology.any_master(),
        };
        drop(topology);
        let mut asking = false;
        let mut loaded = false;
        // Only redirections use up the budget; `TRYAGAIN` is retried until
        // the deadline.
        let mut redirects = 0;
        loop {
            let reply = inner.send(&node, cmd, asking, deadline).await?;
            let Value::ServerError(e) = &reply else {
                return Ok(reply);
            };
            match e.kind() {
                Some(ServerErrorKind::Moved | ServerErrorKind::Ask) if redirects == MAX_REDIRECTS => {
                    return Err(RedisFailure::Cluster(format!(
                        "more than {MAX_REDIRECTS} redirections for one command"
                    )));
                }
                Some(ServerErrorKind::Moved) => {
                    inner.refresh_soon();
                    node = inner.redirect(e.details())?;
                    asking = false;
                    redirects += 1;
                }
                Some(ServerErrorKind::Ask) => {
                    node = inner.redirect(e.details())?;
                    asking = true;
                    redirects += 1;
                }
                Some(ServerErrorKind::TryAgain) => {
                    tokio::time::sleep_until(deadline.min(Instant::now() + TRYAGAIN_PAUSE)).await;
                }
                Some(ServerErrorKind::NoScript) if !loaded && script.is_some() => {
                    let mut conn = PipeRef(&node.pipe);
                    let load = script.expect("some").load_async(&mut conn);
                    tokio::time::timeout_at(deadline, load)
                        .await
                        .map_err(|_| RedisFailure::Timeout(inner.timeout))??;
                    loaded = true;
                }
                Some(ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown) => {
                    inner.refresh_soon();
                    return Ok(reply);
                }
                _ => return Ok(reply),
            }
            if Instant::now() >= deadline {
                return Err(RedisFailure::Timeout(inner.timeout));
            }
        }
    }

    /// At start-up: every seed that answers must be a cluster node (a
    /// misconfiguration is an error naming the entries); then the slot map
    /// is loaded if a node answers (if none does, the server starts unready
    /// and loads it on first use), and uncovered slots are warned of.
    pub async fn check_at_start(&self, deadline: Instant) -> Result<(), String> {
        let inner = &self.inner;
        let myid = redis::cmd("CLUSTER").arg("MYID").to_owned();
        let asks = inner.seeds.iter().enumerate().map(|(i, addr)| {
            let myid = &myid;
            async move {
                let node = inner.node(addr).ok()?;
                let reply = tokio::time::timeout_at(deadline, node.pipe.request(myid)).await.ok()?.ok()?;
                match reply.extract_error() {
                    Err(e) if e.to_string().contains("cluster support disabled") => {
                        Some(format!("entry {} ({addr}) is not a cluster node: {e}", i + 1))
                    }
                    _ => None,
                }
            }
        });
        let wrong: Vec<String> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        if !wrong.is_empty() {
            return Err(format!("store.redis_cluster_urls: {}", wrong.join("; ")));
        }
        if let Ok(topology) = inner.loaded(deadline).await
            && let Some(slots) = topology.uncovered()
        {
            tracing::warn!(
                slots,
                "Redis Cluster: slots are served by no node; their users get 503 STORE_UNAVAILABLE"
            );
        }
        Ok(())
    }

    /// `cmd` on every master of the slot map, by `deadline`.
    pub async fn on_every_master(&self, cmd: &Cmd, deadline: Instant) -> Result<Vec<Value>, RedisFailure> {
        let topology = self.inner.loaded(deadline).await?;
        let calls = topology.masters.iter().map(|node| self.inner.send(node, cmd, false, deadline));
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// The cluster serves every slot and every master answers `PING`; else
    /// what is wrong, naming the slots or the node.
    pub async fn health(&self, deadline: Instant) -> Result<(), RedisFailure> {
        let topology = self.inner.loaded(deadline).await?;
        if let Some(uncovered) = topology.uncovered() {
            return Err(RedisFailure::Cluster(format!("slots {uncovered} are served by no node")));
        }
        let ping = redis::cmd("PING");
        let calls = topology.masters.iter().map(|node| async {
            match self.inner.send(node, &ping, false, deadline).await {
                Ok(Value::SimpleString(s)) if s == "PONG" => Ok(()),
                Ok(other) => {
                    Err(RedisFailure::Cluster(format!("{} answered PING with {other:?}", node.addr)))
                }
                Err(e) => Err(RedisFailure::Cluster(format!("{}: {e}", node.addr))),
            }
        });
        futures::future::join_all(calls).await.into_iter().collect()
    }
}

impl Inner {
    /// The slot map, loaded first if it never was (one load at a time; for
    /// `REFRESH_GAP` after a failed load, callers fail at once with its error).
    async fn loaded(self: &Arc<Self>, deadline: Instant) -> Result<Arc<Topology>, RedisFailure> {
        let topology = self.topology.load_full();
        if !topology.slots.is_empty() {
            return Ok(topology);
        }
        drop(topology);
        let mut last_failure = tokio::time::timeout_at(deadline, self.first_load.lock())
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))?;
        if self.topology.load().slots.is_empty() {
            if let Some((at, why)) = &*last_failure
                && at.elapsed() < REFRESH_GAP
            {
                return Err(RedisFailure::Cluster(why.clone()));
            }
            if let Err(why) = self.refresh(deadline).await {
                *last_failure = Some((Instant::now(), why.clone()));
                return Err(RedisFailure::Cluster(why));
            }
        }
        Ok(self.topology.load_full())
    }

    /// The connection to `addr`, made (lazily: connected on first use) when
    /// there is none.
    fn node(&self, addr: &str) -> Result<Arc<Node>, RedisFailure> {
        let mut nodes = self.nodes.lock();
        if let Some(node) = nodes.get(addr) {
            return Ok(node.clone());
        }
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
            .ok_or_else(|| RedisFailure::Cluster(format!("not a node address: {addr:?}")))?;
        let info = self.template.clone().set_addr(ConnectionAddr::Tcp(host, port));
        let pipe = Pipe::new(&info).map_err(|e| RedisFailure::Cluster(format!("{addr}: {e}")))?;
        let node = Arc::new(Node { addr: addr.to_owned(), pipe, up: AtomicBool::new(true) });
        nodes.insert(addr.to_owned(), node.clone());
        Ok(node)
    }

    /// The node a `MOVED` or `ASK` names (`<slot> <host>:<port>`).
    fn redirect(&self, details: Option<&str>) -> Result<Arc<Node>, RedisFailure> {
        let addr = details
            .and_then(|d| d.split_once(' '))
            .map(|(_, addr)| addr.trim())
            .ok_or_else(|| RedisFailure::Cluster(format!("a redirection without a node: {details:?}")))?;
        self.node(addr)
    }

    /// One command (after `ASKING`, on the same connection, when `asking`)
    /// on one node, by `deadline`; the node's reachability follows the outcome.
    async fn send(
        self: &Arc<Self>,
        node: &Arc<Node>,
        cmd: &Cmd,
        asking: bool,
        deadline: Instant,
    ) -> Result<Value, RedisFailure> {
        let call = async {
            if asking {
                let mut both = redis::pipe();
                both.cmd("ASKING").add_command(cmd.clone());
                Ok(node.pipe.request_many(&both, 1, 1).await?.pop().unwrap_or(Value::Nil))
            } else {
                node.pipe.request(cmd).await
            }
        };
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RedisFailure::Redis(e)),
            Err(_) => Err(RedisFailure::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => self.node_answered(node, true, None),
            Err(RedisFailure::Redis(e)) if !unreachable(e) => {}
            Err(e) => {
                self.node_answered(node, false, Some(&e.to_string()));
                self.refresh_soon();
            }
        }
        result
    }

    /// A node answered or did not: log a change once, and update the store's
    /// availability.
    fn node_answered(&self, node: &Node, up: bool, why: Option<&str>) {
        if node.up.swap(up, Ordering::AcqRel) != up {
            self.events.redis_node_availability(&node.addr, up, why);
            self.update_store_up(why);
        }
    }

    /// Up while every slot has a master and every master answers.
    fn update_store_up(&self, why: Option<&str>) {
        let mut store_up = self.store_up.lock();
        let topology = self.topology.load();
        let down = topology.masters.iter().find(|m| !m.up.load(Ordering::Acquire));
        let up = !topology.slots.is_empty() && down.is_none() && topology.uncovered().is_none();
        if std::mem::replace(&mut *store_up, up) != up {
            let why = match (down, topology.uncovered()) {
                (Some(node), _) => format!("{}: {}", node.addr, why.unwrap_or("unreachable")),
                (None, Some(slots)) => format!("slots {slots} are served by no node"),
                (None, None) => why.unwrap_or("").to_owned(),
            };
            self.events.store_availability("redis", up, Some(&why));
        }
    }

    /// Refresh the slot map in the background, unless a refresh is already
    /// on its way; no sooner than `REFRESH_GAP` after the last one started.
    fn refresh_soon(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Lets the next refresh be scheduled however this one ends.
        struct Done(Arc<Inner>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.refreshing.store(false, Ordering::Release);
            }
        }
        let done = Done(self.clone());
        tokio::spawn(async move {
            let inner = &done.0;
            let last = *inner.last_refresh.lock();
            if let Some(last) = last {
                tokio::time::sleep_until(last + REFRESH_GAP).await;
            }
            let _ = inner.refresh(Instant::now() + inner.timeout).await;
        });
    }

    /// Ask every known node and seed for the slot map at once; the first
    /// good answer replaces the map. The error names every node that failed.
    async fn refresh(self: &Arc<Self>, deadline: Instant) -> Result<(), String> {
        *self.last_refresh.lock() = Some(Instant::now());
        let mut candidates: Vec<String> = {
            let topology = self.topology.load();
            topology.masters.iter().chain(&topology.replicas).map(|n| n.addr.clone()).collect()
        };
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        // Each ask is a task of its own: once the first good answer is in,
        // the others still run to their end (bounded by `deadline`) rather
        // than being dropped mid-connect, which would leave their nodes'
        // connections failing fast for the retry pause.
        let mut asks: FuturesUnordered<_> = candidates
            .into_iter()
            .map(|addr| {
                let inner = self.clone();
                tokio::spawn(async move {
                    let node = inner.node(&addr).map_err(|e| e.to_string())?;
                    let slots = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
                    let reply = tokio::time::timeout_at(deadline, node.pipe.request(&slots))
                        .await
                        .map_err(|_| format!("{addr}: no answer within {:?}", inner.timeout))?
                        .and_then(Value::extract_error)
                        .map_err(|e| format!("{addr}: {e}"))?;
                    parse_slots(&reply, &addr).map_err(|e| format!("{addr}: {e}"))
                })
            })
            .collect();
        let mut failures = Vec::new();
        let ranges = loop {
            match asks.next().await.map(|joined| joined.map_err(|e| e.to_string()).and_then(|r| r)) {
                Some(Ok(ranges)) if !ranges.is_empty() => break Some(ranges),
                Some(Ok(_)) => failures.push("a node that serves no slots answered CLUSTER SLOTS".to_owned()),
                Some(Err(e)) => failures.push(e),
                None => break None,
            }
        };
        drop(asks);
        let Some(ranges) = ranges else {
            let why = if failures.iter().any(|f| f.contains("cluster support disabled")) {
                format!("store.redis_cluster_urls must name Redis Cluster nodes: {}", failures.join("; "))
            } else {
                format!("no node answered CLUSTER SLOTS: {}", failures.join("; "))
            };
            let first = !self.refresh_failing.swap(true, Ordering::AcqRel);
            self.events.redis_topology_refreshed(Err(&why), first);
            return Err(why);
        };
        self.refresh_failing.store(false, Ordering::Release);
        let next = match self.build(&ranges) {
            Ok(next) => next,
            Err(e) => {
                let why = e.to_string();
                self.events.redis_topology_refreshed(Err(&why), true);
                return Err(why);
            }
        };
        let current = self.topology.load();
        let moved = current.slots != next.slots
            || current.masters.iter().map(|n| &n.addr).ne(next.masters.iter().map(|n| &n.addr));
        let replicas_changed =
            current.replicas.iter().map(|n| &n.addr).ne(next.replicas.iter().map(|n| &n.addr));
        drop(current);
        if moved || replicas_changed {
            let summary = next.summary();
            self.topology.store(Arc::new(next));
            let topology = self.topology.load();
            let keep: Vec<&String> = topology
                .masters
                .iter()
                .chain(&topology.replicas)
                .map(|n| &n.addr)
                .chain(&self.seeds)
                .collect();
            self.nodes.lock().retain(|addr, _| keep.contains(&addr));
            self.events.redis_topology_refreshed(Ok(moved.then_some(summary.as_str())), moved);
        } else {
            self.events.redis_topology_refreshed(Ok(None), false);
        }
        self.update_store_up(None);
        Ok(())
    }

    /// The slot map of `CLUSTER SLOTS`' ranges, on our node connections.
    fn build(&self, ranges: &[Range]) -> Result<Topology, RedisFailure> {
        let mut topology = Topology { slots: vec![UNCOVERED; SLOTS], ..Topology::default() };
        for range in ranges {
            let index = match topology.masters.iter().position(|m| m.addr == range.master) {
                Some(i) => i,
                None => {
                    topology.masters.push(self.node(&range.master)?);
                    topology.masters.len() - 1
                }
            };
            for slot in range.start..=range.end.min(SLOTS as u16 - 1) {
                topology.slots[usize::from(slot)] = index as u16;
            }
            for replica in &range.replicas {
                if !topology.replicas.iter().any(|r| &r.addr == replica) {
                    topology.replicas.push(self.node(replica)?);
                }
            }
        }
        Ok(topology)
    }
}

impl Topology {
    fn master_of(&self, slot: u16) -> Option<Arc<Node>> {
        match self.slots[usize::from(slot)] {
            UNCOVERED => None,
            i => Some(self.masters[usize::from(i)].clone()),
        }
    }

    /// The first master that answered its last command (any, if none did).
    fn any_master(&self) -> Arc<Node> {
        self.masters.iter().find(|m| m.up.load(Ordering::Acquire)).unwrap_or(&self.masters[0]).clone()
    }

    /// The slots no master serves, as ranges (`0-99, 200`), if any.
    fn uncovered(&self) -> Option<String> {
        let mut out = String::new();
        let mut slot = 0;
        while slot < self.slots.len() {
            if self.slots[slot] != UNCOVERED {
                slot += 1;
                continue;
            }
            let start = slot;
            while slot < self.slots.len() && self.slots[slot] == UNCOVERED {
                slot += 1;
            }
            let sep = if out.is_empty() { "" } else { ", " };
            if slot - 1 == start {
                let _ = write!(out, "{sep}{start}");
            } else {
                let _ = write!(out, "{sep}{start}-{}", slot - 1);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// `0-5460 127.0.0.1:7000, …`: each master and the ranges it serves.
    fn summary(&self) -> String {
        let mut out = String::new();
        let mut slot = 0;
        while slot < self.slots.len() {
            let owner = self.slots[slot];
            let start = slot;
            while slot < self.slots.len() && self.slots[slot] == owner {
                slot += 1;
            }
            let node = if owner == UNCOVERED { "none" } else { &self.masters[usize::from(owner)].addr };
            let sep = if out.is_empty() { "" } else { ", " };
            let _ = write!(out, "{sep}{start}-{} {node}", slot - 1);
        }
        out
    }
}

/// `host:port` of a seed.
fn address(info: &ConnectionInfo) -> anyhow::Result<String> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok(format!("{host}:{port}")),
        _ => anyhow::bail!("only redis:// addresses are supported (no TLS)"),
    }
}

/// Whether an error says the node cannot be reached (as opposed to a
/// command it refused).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// The key that routes a command: the first key of an `EVALSHA`/`EVAL`,
/// none for keyless commands, else the first argument.
fn key_of(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        let _script = args.next();
        let keys = std::str::from_utf8(args.next()?).ok()?.parse::<usize>().ok()?;
        return if keys > 0 { args.next() } else { None };
    }
    const KEYLESS: [&[u8]; 6] = [b"PING", b"TIME", b"INFO", b"SCRIPT", b"CLUSTER", b"ECHO"];
    if KEYLESS.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        return None;
    }
    args.next()
}

/// A key's hash slot: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key.
fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS as u16
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], [replica…]…]…]`.
/// An empty host (a node that does not know its own address) is the one we
/// asked (`asked`: `host:port`).
fn parse_slots(reply: &Value, asked: &str) -> Result<Vec<Range>, String> {
    let Value::Array(entries) = reply else {
        return Err(format!("CLUSTER SLOTS answered {reply:?}"));
    };
    let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
    let node = |v: &Value| -> Result<String, String> {
        let Value::Array(fields) = v else {
            return Err(format!("a node entry that is not an array: {v:?}"));
        };
        let host = match fields.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            other => return Err(format!("a node entry without a host: {other:?}")),
        };
        let host = if host.is_empty() || host == "?" { asked_host.to_owned() } else { host };
        match fields.get(1) {
            Some(Value::Int(port)) => Ok(format!("{host}:{port}")),
            other => Err(format!("a node entry without a port: {other:?}")),
        }
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                return Err(format!("a slot range that is not an array: {entry:?}"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(master)) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(format!("a slot range without its bounds and master: {entry:?}"));
            };
            let in_range = |n: i64| u16::try_from(n).ok().filter(|&s| usize::from(s) < SLOTS);
            let (Some(start), Some(end)) = (in_range(*start), in_range(*end)) else {
                return Err(format!("a slot range out of bounds: {start}-{end}"));
            };
            Ok(Range {
                start,
                end,
                master: node(master)?,
                replicas: fields[3..].iter().map(node).collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        // The values Redis's own `CLUSTER KEYSLOT` gives.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"sg:{g:7}:exp"), slot_of(b"g:7"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"), "an empty tag hashes the whole key");
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn the_routing_key_of_each_kind_of_command() {
        let evalsha = redis::cmd("EVALSHA").arg("abc").arg(2).arg("k1").arg("k2").arg("argv").to_owned();
        assert_eq!(key_of(&evalsha), Some(&b"k1"[..]));
        let keyless_script = redis::cmd("EVALSHA").arg("abc").arg(0).arg("argv").to_owned();
        assert_eq!(key_of(&keyless_script), None);
        assert_eq!(key_of(&redis::cmd("HMGET").arg("h").arg("f").to_owned()), Some(&b"h"[..]));
        assert_eq!(key_of(&redis::cmd("TIME")), None);
        assert_eq!(key_of(&redis::cmd("INFO").arg("server").to_owned()), None);
        assert_eq!(key_of(&redis::cmd("SCRIPT").arg("LOAD").arg("return 1").to_owned()), None);
    }

    #[test]
    fn cluster_slots_replies_are_read_into_ranges() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id4")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id2"), Value::Map(vec![])]),
            ]),
        ]);
        let ranges = parse_slots(&reply, "10.0.0.9:7001").unwrap();
        assert_eq!(
            ranges,
            vec![
                Range {
                    start: 0,
                    end: 5460,
                    master: "127.0.0.1:7000".into(),
                    replicas: vec!["127.0.0.1:7003".into()]
                },
                Range { start: 5461, end: 16383, master: "10.0.0.9:7001".into(), replicas: vec![] },
            ]
        );
        assert!(parse_slots(&bulk("nope"), "h:1").is_err());
        let out_of_bounds = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(20000),
            Value::Array(vec![bulk("h"), Value::Int(1)]),
        ])]);
        assert!(parse_slots(&out_of_bounds, "h:1").unwrap_err().contains("out of bounds"));
    }

    #[test]
    fn uncovered_slots_are_named_as_ranges() {
        let mut t = Topology { slots: vec![0; SLOTS], ..Topology::default() };
        assert_eq!(t.uncovered(), None);
        for s in 100..200 {
            t.slots[s] = UNCOVERED;
        }
        t.slots[16383] = UNCOVERED;
        assert_eq!(t.uncovered().as_deref(), Some("100-199, 16383"));
    }
}
