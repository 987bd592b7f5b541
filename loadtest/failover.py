#!/usr/bin/env python3
"""A store fault under traffic, against a release build: what users see.

Modes:
  cluster  six redis-servers (three masters, one replica each,
           cluster-node-timeout 1000, cluster-require-full-coverage no);
           the master serving the most users is killed with SIGKILL midway.
  redis    one redis-server (append-only file); killed with SIGKILL midway
           and started again at once, as a supervisor would.

Every user reads its session every 20 ms (a heartbeat, a write, every tenth
time). Printed per run: when the store healed (cluster_state:ok with the
replica promoted, or PONG), the last failure after that, how many requests
failed and of which users, and whether every session survived. Loopback only,
bounded in time. Usage (loadtest/failover.sh builds and calls this):
  failover.py BIN MODE [--runs 3] [--users 24] [--secs 12]
"""

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SECRET = "failover-secret-failover-secret-0123"


def free_port(bus=False):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not bus:
            return port
        if port < 55000:
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass
            finally:
                b.close()


def cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return out.stdout + out.stderr


def wait(what, ok, secs=20):
    deadline = time.time() + secs
    while not ok():
        if time.time() > deadline:
            sys.exit(f"failover: timed out waiting until {what}")
        time.sleep(0.02)


class Redis:
    def __init__(self, extra, bus=False):
        self.port = free_port(bus)
        self.dir = tempfile.mkdtemp(prefix="sg-failover-")
        self.extra = extra
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait(f"redis-server on {self.port} answers", lambda: "PONG" in cli(self.port, "ping"))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def request(base, method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        method=method,
        data=data,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    started = time.time()
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}"), time.time() - started
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), time.time() - started


def token(bin_path, user):
    out = subprocess.run(
        [bin_path, "token", "--sub", user, "--ttl", "1h"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "SESSIONGATE__AUTH__HS256_SECRET": SECRET},
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def run_once(args, n):
    nodes = []
    if args.mode == "cluster":
        extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                 "--cluster-require-full-coverage", "no", "--save", "", "--appendonly", "no"]
        nodes = [Redis(extra, bus=True) for _ in range(6)]
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{r.port}" for r in nodes],
                        "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, check=True)
        wait("the cluster is ok", lambda: all("cluster_state:ok" in cli(r.port, "cluster", "info") for r in nodes))
        wait("every replica is linked", lambda: all(
            "role:master" in i or "master_link_status:up" in i
            for i in (cli(r.port, "info", "replication") for r in nodes)))
        store = {"SESSIONGATE__STORE__REDIS_CLUSTER_URLS": json.dumps([f"redis://127.0.0.1:{r.port}" for r in nodes])}
    else:
        nodes = [Redis(["--save", "", "--appendonly", "yes", "--appendfsync", "no"])]
        store = {"SESSIONGATE__STORE__REDIS_URL": f"redis://127.0.0.1:{nodes[0].port}"}
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "SESSIONGATE__SERVER__LISTEN": f"127.0.0.1:{port}",
        "SESSIONGATE__AUTH__HS256_SECRET": SECRET,
        "SESSIONGATE__TELEMETRY__LOG_LEVEL": "warn",
        "SESSIONGATE__STORE__BACKEND": "redis",
        "SESSIONGATE__STORE__COMMAND_TIMEOUT": "500ms",
        "SESSIONGATE__RATE_LIMIT__PER_IP": "{per_second=0,burst=1}",
        **store,
    }
    server = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                    return json.loads(r.read()).get("store") == "up"
            except OSError:
                return False
        wait("sessiongate is ready", ready)
        users = []
        for i in range(args.users):
            t = token(args.bin, f"user-{i}")
            status, body, _ = request(base, "POST", "/v1/sessions", t, {"tool_set": "general"})
            assert status == 201, (status, body)
            users.append((t, body["id"]))
        victim = None
        if args.mode == "cluster":
            # The master serving the most users' sessions.
            owners = {}
            for t, sid in users:
                slot = int(cli(nodes[0].port, "cluster", "keyslot", group_tag(t)).strip() or 0)
                owners[slot] = owners.get(slot, 0) + 1
            by_node = {}
            for line in cli(nodes[0].port, "cluster", "nodes").splitlines():
                f = line.split()
                if "master" not in f[2]:
                    continue
                p = int(f[1].split("@")[0].split(":")[1])
                for r in f[8:]:
                    a, _, b = r.partition("-")
                    lo, hi = int(a), int(b or a)
                    by_node[p] = by_node.get(p, 0) + sum(c for s, c in owners.items() if lo <= s <= hi)
            victim_port = max(by_node, key=by_node.get)
            victim = next(r for r in nodes if r.port == victim_port)
        else:
            victim = nodes[0]

        seen = []  # (user, t, status, secs)
        stop = threading.Event()
        start = time.time()

        def loop(u):
            t, sid = users[u]
            k = 0
            while not stop.is_set():
                at = time.time() - start
                if k % 10 == 0:
                    status, _, took = request(base, "POST", f"/v1/sessions/{sid}/heartbeat", t, {})
                else:
                    status, _, took = request(base, "GET", f"/v1/sessions/{sid}", t)
                seen.append((u, at, status, took))
                k += 1
                time.sleep(0.02)

        threads = [threading.Thread(target=loop, args=(u,)) for u in range(len(users))]
        for th in threads:
            th.start()
        time.sleep(args.secs / 3)
        fault = time.time() - start
        victim.kill()
        if args.mode == "redis":
            victim.start()
            healed = time.time() - start
        else:
            others = [r for r in nodes if r is not victim]
            wait("a replica takes over", lambda: all(
                "cluster_state:ok" in cli(r.port, "cluster", "info") for r in others)
                and sum("role:master" in cli(r.port, "info", "replication") for r in others) == 3)
            healed = time.time() - start
        time.sleep(max(0, args.secs - (time.time() - start)))
        stop.set()
        for th in threads:
            th.join()

        failed = [s for s in seen if s[2] != 200]
        bad_status = sorted({s[2] for s in failed} - {503})
        hit = sorted({s[0] for s in failed})
        last = max((s[1] for s in failed), default=None)
        survived = sum(request(base, "GET", f"/v1/sessions/{sid}", t)[0] == 200 for t, sid in users)
        slowest_ok = max((s[3] for s in seen if s[2] == 200), default=0)
        print(
            f"run {n}: {args.mode}: store healed {healed - fault:.2f} s after the fault; "
            f"last failure {'none' if last is None else f'{last - healed:+.3f} s'} after that; "
            f"{len(failed)} of {len(seen)} requests failed ({100 * len(failed) / max(1, len(seen)):.2f}%), "
            f"from {len(hit)} of {len(users)} users; other statuses {bad_status or 'none'}; "
            f"slowest 200 {slowest_ok * 1000:.0f} ms; sessions surviving {survived}/{len(users)}",
            flush=True,
        )
        return not bad_status and survived == len(users)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        for r in nodes:
            r.stop()


def group_tag(tok):
    """The `{g:<n>}` hash tag of a token's user: `group_of` in
    src/store/redis/mod.rs (FNV-1a of the user id, modulo its 64 groups)."""
    payload = tok.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    sub = json.loads(base64.urlsafe_b64decode(payload))["sub"]
    h = 0xcbf29ce484222325
    for b in sub.encode():
        h ^= b
        h = (h * 0x100000001b3) % (1 << 64)
    return "{g:%d}" % (h % 64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bin")
    p.add_argument("mode", choices=["cluster", "redis"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--users", type=int, default=24)
    p.add_argument("--secs", type=float, default=12)
    args = p.parse_args()
    ok = all([run_once(args, n) for n in range(1, args.runs + 1)])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
