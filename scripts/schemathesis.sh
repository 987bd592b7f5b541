#!/usr/bin/env bash
# Schema-based API fuzzing: schemathesis (PyPI) against the OpenAPI document
# of a running sessiongate, with a valid admin token, every operation, every
# check (no 5xx, responses conform to the documented schemas and status
# codes, schema-valid requests accepted, invalid ones rejected, stateful
# sequences through the document's links). Bounded: EXAMPLES per operation
# (default 150, a few thousand requests in all), a fixed seed.
# Any failure fails the script; so does any error-level server log line.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SESSIONGATE_BIN:-target/debug/sessiongate}
EXAMPLES=${EXAMPLES:-150}
SEED=${SEED:-1}
SECRET=fuzz-secret-fuzz-secret-fuzz-secret-0123
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
LOG=$(mktemp)
env -i PATH="$PATH" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$PORT SESSIONGATE__AUTH__HS256_SECRET=$SECRET \
  SESSIONGATE__RATE_LIMIT__POLICIES='[]' SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=0,burst=1}' \
  SESSIONGATE__SESSIONS__MAX_PER_USER=1000 SESSIONGATE__TELEMETRY__LOG_LEVEL=warn "$BIN" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
up=0; for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && { up=1; break; }; sleep 0.1; done
[ "$up" = 1 ] || { echo "schemathesis: sessiongate on $PORT did not start:"; cat "$LOG"; exit 1; }
TOKEN=$(env -i SESSIONGATE__AUTH__HS256_SECRET=$SECRET "$BIN" token --sub fuzz-user --role admin --ttl 1h)
URL=http://127.0.0.1:$PORT/openapi.json
cd "$(mktemp -d)"   # schemathesis writes its reports and cache here
# Every operation but the runtime-config PATCH, with every check.
st run "$URL" -H "Authorization: Bearer $TOKEN" --checks all -n "$EXAMPLES" --seed "$SEED" \
  --exclude-path /v1/admin/config --no-color
# The runtime config: a JSON Merge Patch whose valid values depend on each
# other (idle_ttl <= max_lifetime, known policy names), which a schema cannot
# say; so schema-valid patches may be refused with 422, and that one check is
# left out. Every other check applies (no 5xx, documented answers).
st run "$URL" -H "Authorization: Bearer $TOKEN" --checks all --exclude-checks positive_data_acceptance \
  -n "$EXAMPLES" --seed "$SEED" --include-path /v1/admin/config --phases examples,coverage,fuzzing --no-color
if grep -q '"level":"ERROR"' "$LOG"; then
  echo "the server logged errors under fuzzing:"; grep '"level":"ERROR"' "$LOG" | head -20; exit 1
fi
echo "schemathesis: no failures"
