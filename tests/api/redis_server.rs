//! A `redis-server` of the test's own, on a free loopback port: isolated,
//! killable and restartable (same port, same data directory). Never the
//! machine's shared Redis.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// True when something on `port` answers PING with PONG.
pub fn pong(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl RedisServer {
    /// No persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// With an append-only file: survives being killed and restarted. Redis
    /// writes each command to the file (the kernel's page cache) before it
    /// answers, so a killed process loses nothing it acknowledged; `fsync`
    /// only guards against the machine going down. Fsyncing every write
    /// (`always`) made writes wait for the disk, past the tests' short
    /// command timeouts when the machine was busy (a clean-clone CI run once
    /// saw a 503 that way); `everysec` may postpone the write itself while a
    /// slow fsync runs. `no` never waits and never postpones.
    pub fn start_persistent() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "no"])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // The free port can be taken between finding it and redis-server
        // binding it (another test): then it exits, and another port is tried.
        for _ in 0..5 {
            if server.spawn() {
                return server;
            }
            server.port = free_port();
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// Start redis-server on `self.port`; false when it exited (port taken).
    /// Ready means ours answers: a PONG from the port and, to be sure it is
    /// not another test's, our data directory in its `CONFIG GET dir`.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pong(self.port) {
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
        let dir = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "config", "get", "dir"])
            .output()
            .expect("redis-cli is installed");
        let ours = std::fs::canonicalize(self.dir.path()).unwrap();
        assert!(
            String::from_utf8_lossy(&dir.stdout).lines().any(|l| std::path::Path::new(l.trim()) == ours),
            "port {} answers, but not our redis-server: {:?}",
            self.port,
            String::from_utf8_lossy(&dir.stdout)
        );
        true
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no goodbye, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server hangs, connections stay open, nothing answers
    /// (a stalled Redis: swapping, a long fork, a network black hole).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: answers again.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// Start again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server could not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster on loopback, made with `redis-cli --cluster create`;
/// every node is stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A port whose cluster-bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// `redis-cli -p <port> <args…>`'s output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out =
        Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

impl RedisCluster {
    /// Three masters, no replicas.
    pub fn start() -> Self {
        Self::start_with(3, 0)
    }

    /// `masters` masters with `replicas` replicas each, a node timeout of one
    /// second (a failover takes about two), every replica in sync. Nodes do
    /// not require full coverage, as a cluster run for availability is set
    /// up: with Redis's default, every node answers `CLUSTERDOWN` to every
    /// command from the moment a master is marked failed until its replica
    /// is promoted.
    pub fn start_with(masters: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas)).map(|_| Self::new_node()).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Self { nodes };
        for i in 0..cluster.nodes.len() {
            cluster.wait_until(Duration::from_secs(20), "the cluster is ready", || {
                cluster.info(i).contains("cluster_state:ok")
            });
        }
        if replicas > 0 {
            cluster.wait_until(Duration::from_secs(20), "every replica is in sync", || cluster.in_sync());
        }
        cluster
    }

    /// A cluster-enabled redis-server on a free port, not yet in a cluster.
    pub fn new_node() -> RedisServer {
        let mut node = RedisServer {
            child: None,
            port: free_cluster_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        };
        while !node.spawn() {
            node.port = free_cluster_port(); // taken meanwhile: another
        }
        node
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// `CLUSTER INFO` as node `i` sees it.
    pub fn info(&self, i: usize) -> String {
        cli(self.nodes[i].port, &["cluster", "info"])
    }

    pub fn node_id(&self, i: usize) -> String {
        cli(self.nodes[i].port, &["cluster", "myid"]).trim().to_owned()
    }

    /// Whether node `i` is a master now.
    pub fn is_master(&self, i: usize) -> bool {
        cli(self.nodes[i].port, &["role"]).lines().next() == Some("master")
    }

    /// The index of the node that serves `slot`, as node `asked` sees it.
    pub fn owner_of(&self, slot: u16, asked: usize) -> Option<usize> {
        let nodes = cli(self.nodes[asked].port, &["cluster", "nodes"]);
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields.iter().skip(8).any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>() == Ok(slot),
            });
            let port: u16 = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            (serves && fields.get(2)?.contains("master"))
                .then(|| self.nodes.iter().position(|n| n.port == port))?
        })
    }

    /// Every replica's link to its master is up and it has all the master wrote.
    pub fn in_sync(&self) -> bool {
        self.nodes.iter().all(|n| {
            let info = cli(n.port, &["info", "replication"]);
            let field = |name: &str| {
                info.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':').map(str::to_owned))
            };
            match field("role").as_deref() {
                Some("slave") => field("master_link_status").as_deref() == Some("up"),
                Some("master") => {
                    let offset = field("master_repl_offset");
                    info.lines()
                        .filter(|l| l.starts_with("slave") && l.contains("offset="))
                        .all(|l| l.split(',').any(|kv| kv.strip_prefix("offset=") == offset.as_deref()))
                }
                _ => false,
            }
        })
    }

    pub fn wait_until(&self, within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new empty master joins with `redis-cli --cluster add-node`; its
    /// index, once it sees the cluster as ok.
    pub fn add_master(&mut self) -> usize {
        let node = Self::new_node();
        let out = Command::new("redis-cli")
            .args(["--cluster", "add-node", &format!("127.0.0.1:{}", node.port)])
            .arg(format!("127.0.0.1:{}", self.nodes[0].port))
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "add-node: {}", String::from_utf8_lossy(&out.stdout));
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.wait_until(Duration::from_secs(20), "the new node sees the cluster", || {
            self.info(i).contains("cluster_state:ok")
        });
        i
    }

    /// `redis-cli --cluster <args…>` against the first node; its output.
    pub fn manage(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg(args[0])
            .arg(format!("127.0.0.1:{}", self.nodes[0].port))
            .args(&args[1..])
            .output()
            .expect("redis-cli is installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "redis-cli --cluster {args:?}: {text}");
        text
    }

    /// Keys held by each node (to show the data is spread).
    pub fn keys_per_node(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| cli(n.port, &["dbsize"]).trim().parse().unwrap_or(0)).collect()
    }
}
