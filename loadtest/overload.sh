#!/usr/bin/env bash
# Overload: an open-loop rate above what the full stack serves, with and
# without a bound on the requests served at once (server.max_in_flight).
# Authenticated GET /v1/sessions/{id}, memory store, no rate-limit policies,
# per-IP limit off. First the peak (closed loop); then, for each setting, oha
# at OVER x the peak (open loop, corrected for coordinated omission), with
# the latency of the admitted (2xx) requests apart from the refused ones.
# Printed: admitted req/s, the share refused with 503 OVERLOADED, and p50/p99
# of the admitted requests. Nothing is asserted. Loopback only, bounded.
# Usage: [BOUND=64] [OVER=2] [CONNS=512] loadtest/overload.sh [seconds per run, default 10]
# oha (MIT, crates.io) is installed with `cargo install oha --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BOUND=${BOUND:-64}
OVER=${OVER:-2}
CONNS=${CONNS:-512}
SECRET=overload-secret-overload-secret-0123
command -v curl >/dev/null || { echo "missing curl"; exit 1; }
command -v oha >/dev/null || { echo "installing oha (cargo install oha --locked)"; cargo install oha --locked --quiet; }
cargo build --release --quiet --bin sessiongate
BIN=target/release/sessiongate
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start MAX_IN_FLIGHT: a server; sets URL and PID.
start() {
  local port; port=$(free_port)
  env -i PATH="$PATH" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$port SESSIONGATE__AUTH__HS256_SECRET=$SECRET \
    SESSIONGATE__SERVER__MAX_IN_FLIGHT="$1" SESSIONGATE__SERVER__MAX_CONNECTIONS=100000 \
    SESSIONGATE__TELEMETRY__LOG_LEVEL=error \
    SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=0,burst=1}' SESSIONGATE__RATE_LIMIT__POLICIES='[]' \
    $BIN >/dev/null 2>&1 &
  PID=$!; PIDS+=($PID)
  URL=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf -o /dev/null "$URL/healthz" && break; sleep 0.1; done
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

TOKEN=$(SESSIONGATE__AUTH__HS256_SECRET=$SECRET $BIN token --sub overload --ttl 1h)
session() {
  curl -sf -X POST "$URL/v1/sessions" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"tool_set":"general"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])'
}

start 1000000
ID=$(session)
PEAK=$(oha --no-tui --output-format json -z 5s -c 64 -H "authorization: Bearer $TOKEN" "$URL/v1/sessions/$ID" |
  python3 -c 'import json,sys;print(int(json.load(sys.stdin)["summary"]["requestsPerSec"]))')
stop "$PID"
RATE=$(( PEAK * OVER ))
echo "overload: $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "peak (closed loop, 64 connections): $PEAK req/s; offered: $RATE req/s open loop on $CONNS connections, ${SECS} s each"
printf '%-28s %14s %10s %12s %12s\n' "max_in_flight" "admitted req/s" "refused" "p50 admitted" "p99 admitted"
for bound in 1000000 "$BOUND"; do
  start "$bound"
  ID=$(session)
  oha --no-tui --output-format json -z "${SECS}s" -q "$RATE" -c "$CONNS" --latency-correction \
    --stats-success-breakdown -H "authorization: Bearer $TOKEN" "$URL/v1/sessions/$ID" > /tmp/overload.$$.json || true
  stop "$PID"
  python3 - "$bound" "$SECS" /tmp/overload.$$.json <<'EOF'
import json, sys
bound, secs, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
d = json.load(open(path))
codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
refused = codes.get(503, 0)
total = sum(codes.values()) + sum(d.get("errorDistribution", {}).values())
p = d.get("latencyPercentilesSuccessful") or d["latencyPercentiles"]
label = "off (1000000)" if bound == "1000000" else bound
print(f"{label:<28} {ok / secs:>14.0f} {100 * refused / max(1, total):>9.1f}% "
      f"{1000 * p['p50']:>10.2f}ms {1000 * p['p99']:>10.2f}ms")
other = {k: v for k, v in codes.items() if not (200 <= k < 300 or k == 503)}
if other or d.get("errorDistribution"):
    print(f"  other answers: {other}, errors: {d.get('errorDistribution')}")
EOF
done
rm -f /tmp/overload.$$.json
