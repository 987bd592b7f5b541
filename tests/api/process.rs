//! The real `sessiongate` binary as a child process: configured by
//! environment only (as in a container), its stdout JSON log lines kept for
//! the test to read, stopped by SIGTERM (graceful) or killed on drop.

use crate::helpers::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct SgProcess {
    child: Child,
    pub base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for SgProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SgProcess {
    /// Start on a free loopback port with the test secret, issuer and
    /// audience, JSON logs, and `env` on top; returns once it listens.
    pub fn start(env: &[(&str, &str)]) -> SgProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SESSIONGATE__SERVER__LISTEN", "127.0.0.1:0")
            .env("SESSIONGATE__AUTH__HS256_SECRET", SECRET)
            .env("SESSIONGATE__AUTH__ISSUER", ISSUER)
            .env("SESSIONGATE__AUTH__AUDIENCE", AUDIENCE)
            .env("SESSIONGATE__TELEMETRY__LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["event"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("sessiongate started");
        SgProcess { child, base: format!("http://{addr}"), lines }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send SIGTERM (returns at once).
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// Wait (without blocking the runtime) for a clean exit.
    pub async fn wait_for_clean_exit(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("sessiongate did not exit within {within:?}");
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(&mut self) {
        self.sigterm();
        self.wait_for_clean_exit(Duration::from_secs(10)).await;
    }

    /// Every stdout line so far, each parsed as JSON (a line that is not
    /// JSON fails the test).
    pub fn log_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Raw stdout lines so far.
    pub fn raw_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}
