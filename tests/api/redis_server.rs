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

/// A real three-master Redis Cluster on loopback, made with
/// `redis-cli --cluster create`; every node is stopped on drop.
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

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let mut node = RedisServer {
                    child: None,
                    port: free_cluster_port(),
                    dir: tempfile::tempdir().unwrap(),
                    extra: ["--cluster-enabled", "yes", "--save", "", "--appendonly", "no"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                };
                while !node.spawn() {
                    node.port = free_cluster_port(); // taken meanwhile: another
                }
                node
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not become ready");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Keys held by each node (to show the data is spread).
    pub fn keys_per_node(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| {
                let out =
                    Command::new("redis-cli").args(["-p", &n.port.to_string(), "dbsize"]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
            })
            .collect()
    }
}
