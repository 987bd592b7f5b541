#!/usr/bin/env bash
# Instructions per request of authenticated GET /v1/sessions/{id}, counted by
# valgrind's callgrind: the bare axum baseline (examples/bare_axum.rs) and
# sessiongate (memory store with both rate-limit layers, as bench.sh's
# `memory`; and the Redis store and Redis limiter, as its `redis`).
#
# Why beside bench.sh: a count of instructions is the same for the same
# binaries and requests whatever else the machine runs, so it shows what a
# change did where timed runs on a shared machine move by 10-20%. It is not
# the target itself: time per instruction differs (sessiongate's request path
# touches about twice as much code as the baseline's, and instruction-cache
# misses make up much of the rest of the difference in CPU time; the
# simulated level-1 misses are printed with CACHE=1).
#
# Each server runs under callgrind; a Python client sends WARM requests on one
# kept-alive connection, the counters are zeroed, N more are sent, and the
# counts are dumped: instructions / N is the server's whole cost per request
# (its own threads, the runtime, the allocator, libc).
# The Redis stack's row is followed by redis-server's own count for the same
# requests (its two commands: the rate-limit script and the session's HMGET).
# Usage: [N=2000] [WARM=300] [CACHE=1] [KEEP=dir] [STACKS="bare memory redis"] loadtest/instructions.sh
# (KEEP: copy the callgrind outputs there, for callgrind_annotate; STACKS:
# which servers to count, e.g. `memory` alone for an A/B of a change that
# touches only sessiongate's own request path, as loadtest/ab.sh does.)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
WARM=${WARM:-300}
STACKS=" ${STACKS:-bare memory redis} "
SECRET=bench-secret-bench-secret-bench-secret-0123
for cmd in valgrind callgrind_control callgrind_annotate redis-server redis-cli curl python3; do
  command -v $cmd >/dev/null || { echo "missing $cmd (apt-get install valgrind redis-server redis-tools curl python3)"; exit 1; }
done
if [[ $STACKS == *" bare "* ]]; then
  cargo build --release --quiet --bin sessiongate --example bare_axum
else
  cargo build --release --quiet --bin sessiongate
fi
T=${CARGO_TARGET_DIR:-target}
BIN=$T/release/sessiongate
OUT=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$OUT"/*.out.* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# send PORT PATH COUNT [HEADER]: COUNT sequential GETs on one connection; each must be a 200.
send() {
  python3 - "$@" <<'PY'
import socket, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
header = sys.argv[4] + "\r\n" if len(sys.argv) > 4 else ""
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n".encode()
buf = b""
for _ in range(n):
    s.sendall(request)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode()
            length = next((int(l.split(":", 1)[1]) for l in head.split("\r\n")[1:]
                           if l.lower().startswith("content-length:")), 0)
            if len(buf) >= end + 4 + length:
                if not head.startswith("HTTP/1.1 200"):
                    sys.exit("not a 200: " + head.splitlines()[0])
                buf = buf[end + 4 + length:]
                break
        data = s.recv(65536)
        if not data:
            sys.exit("connection closed")
        buf += data
PY
}

# count NAME PORT PATH HEADER -- CMD...: runs CMD, where the word VALGRIND
# stands for callgrind and its options (after any `env`: valgrind does not
# follow an exec), and prints "NAME instr/req [I1 D1r D1w misses/req]".
count() {
  local name=$1 port=$2 path=$3 header=$4; shift 5
  local opts=(valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out")
  [ "${CACHE:-0}" = 1 ] && opts+=(--cache-sim=yes)
  local cmd=() word
  for word in "$@"; do
    if [ "$word" = VALGRIND ]; then cmd+=("${opts[@]}"); else cmd+=("$word"); fi
  done
  "${cmd[@]}" >/dev/null 2>&1 &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
  if [ "$name" != bare ]; then
    local id
    id=$(curl -sf -X POST "http://127.0.0.1:$port/v1/sessions" -H "$header" -H 'content-type: application/json' \
      -d '{"tool_set":"general"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
    path=/v1/sessions/$id
  fi
  send "$port" "$path" "$WARM" ${header:+"$header"}
  # The Redis stack's requests are counted in redis-server too.
  local also=()
  [ "$name" = redis ] && also=("$REDIS_PID")
  local q
  for q in "$pid" "${also[@]}"; do callgrind_control -z "$q" >/dev/null; done
  send "$port" "$path" "$N" ${header:+"$header"}
  for q in "$pid" "${also[@]}"; do callgrind_control -d "$q" >/dev/null; done
  sleep 0.5
  kill "$pid"; wait "$pid" 2>/dev/null || true
  totals "$name"
  [ "$name" = redis ] && totals redis-server
  return 0
}

# totals NAME: "NAME instr/req [I1 D1r D1w misses/req]" from NAME's last dump.
totals() {
  local name=$1 file
  file=$(ls -t "$OUT/$name.out".* 2>/dev/null | head -1 || true)
  [ -n "$file" ] || { echo "$name: callgrind wrote no counts" >&2; exit 1; }
  callgrind_annotate "$file" 2>/dev/null | python3 -c '
import re, sys
name, n = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    if "PROGRAM TOTALS" in line:
        v = [int(x.replace(",", "")) for x in re.findall(r"([\d,]+) \(", line)]
        extra = f" {v[3] / n:8.0f} {v[4] / n:8.0f} {v[5] / n:8.0f}" if len(v) >= 6 else ""
        print(f"{name} {v[0] / n:.0f}{extra}")' "$name" "$N"
}

TOKEN=$(env -i SESSIONGATE__AUTH__HS256_SECRET=$SECRET $BIN token --sub bench --ttl 1h)
AUTH="Authorization: Bearer $TOKEN"
LIMITS=(SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=1000000,burst=1000000}'
        SESSIONGATE__RATE_LIMIT__POLICIES='[{name="default",limit=1000000000,window="60s"}]')
# redis-server under callgrind as well: its instructions per request are the
# share of the one Redis that every replica's requests queue for.
rp=$(free_port); mkdir "$OUT/redis"
if [[ $STACKS == *" redis "* ]]; then
ropts=(valgrind --tool=callgrind --callgrind-out-file="$OUT/redis-server.out")
[ "${CACHE:-0}" = 1 ] && ropts+=(--cache-sim=yes)
"${ropts[@]}" "$(command -v redis-server)" --port "$rp" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$OUT/redis" >/dev/null 2>&1 & REDIS_PID=$!; PIDS+=($REDIS_PID)
for _ in $(seq 100); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.2; done
fi

SG_ENV=(env -i PATH="$PATH" SESSIONGATE__AUTH__HS256_SECRET=$SECRET SESSIONGATE__TELEMETRY__LOG_LEVEL=info)
RESULTS=$OUT/results
[[ $STACKS == *" bare "* ]] && p=$(free_port) && count bare "$p" /v1/sessions/0190f7d2-0000-7000-8000-000000000000 "" -- \
  VALGRIND $T/release/examples/bare_axum 127.0.0.1:$p >>"$RESULTS"
[[ $STACKS == *" memory "* ]] && p=$(free_port) && count memory "$p" - "$AUTH" -- \
  "${SG_ENV[@]}" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$p "${LIMITS[@]}" VALGRIND $BIN >>"$RESULTS"
[[ $STACKS == *" redis "* ]] && p=$(free_port) && count redis "$p" - "$AUTH" -- \
  "${SG_ENV[@]}" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$p "${LIMITS[@]}" SESSIONGATE__STORE__BACKEND=redis \
  SESSIONGATE__STORE__REDIS_URL=redis://127.0.0.1:$rp VALGRIND $BIN >>"$RESULTS"

echo
echo "GET /v1/sessions/{id}: instructions per request ($N requests after $WARM, one connection, callgrind; $(date -u +%F))"
python3 - "$RESULTS" <<'PY'
import sys
rows = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(sys.argv[1]) if l.strip()}
cache = any(len(v) > 1 for v in rows.values())
bare = rows.get("bare", [0])[0]
print(f"{'stack':<12} {'instr/req':>10} {'vs bare':>8}" + (f" {'I1 miss':>8} {'D1r miss':>8} {'D1w miss':>8}" if cache else ""))
for name in ("bare", "memory", "redis", "redis-server"):
    if name not in rows:
        continue
    v = rows[name]
    extra = "".join(f" {x:8.0f}" for x in v[1:]) if cache else ""
    ratio = f"{v[0] / bare:>8.3f}" if bare else f"{'-':>8}"
    print(f"{name:<12} {v[0]:>10.0f} {ratio}{extra}")
PY
