#!/usr/bin/env bash
# Overload: an open-loop rate above capacity, with and without a bound on
# the requests served at once (server.max_in_flight). Two kinds of capacity:
#  1. CPU: authenticated GET /v1/sessions/{id}, memory store; the peak is
#     measured closed loop, then OVER x the peak is offered.
#  2. A slow dependency: queries through the `http` agent to
#     loadtest/slow_agent.py, which serves AGENT_CAPACITY queries at once,
#     AGENT_WORK s each; OVER x its capacity is offered.
# No rate-limit policies, per-IP limit off. oha runs open loop, corrected for
# coordinated omission, with the admitted (2xx) requests' latency apart from
# the refused ones. Printed: admitted req/s, the share refused with 503
# OVERLOADED, p50/p99 of the admitted. Nothing is asserted. Loopback only.
# Usage: [BOUND=64] [OVER=2] [CONNS=512] [AGENT_CAPACITY=32] [AGENT_WORK=0.02]
#        loadtest/overload.sh [seconds per run, default 10]
# oha (MIT, crates.io) is installed with `cargo install oha --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BOUND=${BOUND:-64}
OVER=${OVER:-2}
CONNS=${CONNS:-512}
AGENT_CAPACITY=${AGENT_CAPACITY:-32}
AGENT_WORK=${AGENT_WORK:-0.02}
SECRET=overload-secret-overload-secret-0123
command -v curl >/dev/null || { echo "missing curl"; exit 1; }
command -v oha >/dev/null || { echo "installing oha (cargo install oha --locked)"; cargo install oha --locked --quiet; }
cargo build --release --quiet --bin sessiongate
BIN=target/release/sessiongate
OUT=$(mktemp)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "$OUT"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start MAX_IN_FLIGHT [VAR=VALUE...]: a server; sets URL and PID.
start() {
  local port bound=$1; shift; port=$(free_port)
  env -i PATH="$PATH" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$port SESSIONGATE__AUTH__HS256_SECRET=$SECRET \
    SESSIONGATE__SERVER__MAX_IN_FLIGHT="$bound" SESSIONGATE__SERVER__MAX_CONNECTIONS=100000 \
    SESSIONGATE__TELEMETRY__LOG_LEVEL=error \
    SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=0,burst=1}' SESSIONGATE__RATE_LIMIT__POLICIES='[]' \
    "$@" $BIN >/dev/null 2>&1 &
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
header() { printf '%-28s %14s %10s %12s %12s\n' "max_in_flight" "admitted req/s" "refused" "p50 admitted" "p99 admitted"; }
# report BOUND: one row of the table, from oha's JSON in $OUT.
report() {
  python3 -c '
import json, sys
bound, secs, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
d = json.load(open(path))
codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
refused = codes.get(503, 0)
total = sum(codes.values()) + sum(d.get("errorDistribution", {}).values())
p = d.get("latencyPercentilesSuccessful") or d["latencyPercentiles"]
label = "off (1000000)" if bound == "1000000" else bound
p50, p99 = 1000 * p["p50"], 1000 * p["p99"]
print(f"{label:<28} {ok / secs:>14.0f} {100 * refused / max(1, total):>9.1f}% {p50:>10.2f}ms {p99:>10.2f}ms")
other = {k: v for k, v in codes.items() if not (200 <= k < 300 or k == 503)}
errors = d.get("errorDistribution")
if other or errors:
    print(f"  other answers: {other}, errors: {errors}")
' "$1" "$SECS" "$OUT"
}

echo "overload: $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# 1. CPU-bound reads.
start 1000000
ID=$(session)
PEAK=$(oha --no-tui --output-format json -z 5s -c 64 -H "authorization: Bearer $TOKEN" "$URL/v1/sessions/$ID" |
  python3 -c 'import json,sys;print(int(json.load(sys.stdin)["summary"]["requestsPerSec"]))')
stop "$PID"
RATE=$(( PEAK * OVER ))
echo
echo "1. CPU: GET /v1/sessions/{id}; peak (closed loop, 64 connections) $PEAK req/s;"
echo "   offered $RATE req/s open loop on $CONNS connections, ${SECS} s each"
header
for bound in 1000000 "$BOUND"; do
  start "$bound"
  ID=$(session)
  oha --no-tui --output-format json -z "${SECS}s" -q "$RATE" -c "$CONNS" --latency-correction \
    --stats-success-breakdown -H "authorization: Bearer $TOKEN" "$URL/v1/sessions/$ID" > "$OUT" || true
  stop "$PID"
  report "$bound"
done

# 2. A slow dependency: an agent of fixed capacity.
APORT=$(free_port)
python3 loadtest/slow_agent.py "$APORT" "$AGENT_CAPACITY" "$AGENT_WORK" & PIDS+=($!)
for _ in $(seq 50); do
  python3 -c "import socket;socket.create_connection(('127.0.0.1',$APORT))" 2>/dev/null && break; sleep 0.1
done
CAPACITY=$(python3 -c "print(int($AGENT_CAPACITY / $AGENT_WORK))")
RATE=$(( CAPACITY * OVER ))
echo
echo "2. Agent: POST /v1/sessions/{id}/queries to an agent serving $AGENT_CAPACITY at once, ${AGENT_WORK} s each"
echo "   ($CAPACITY queries/s); offered $RATE req/s open loop on $CONNS connections, ${SECS} s each"
header
for bound in 1000000 "$BOUND"; do
  start "$bound" SESSIONGATE__AGENT__KIND=http SESSIONGATE__AGENT__URL="http://127.0.0.1:$APORT/" \
    SESSIONGATE__AGENT__TIMEOUT=30s
  ID=$(session)
  oha --no-tui --output-format json -z "${SECS}s" -q "$RATE" -c "$CONNS" --latency-correction \
    --stats-success-breakdown -m POST -T application/json -d '{"input":"load"}' \
    -H "authorization: Bearer $TOKEN" "$URL/v1/sessions/$ID/queries" > "$OUT" || true
  stop "$PID"
  report "$bound"
done
