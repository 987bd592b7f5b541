#!/usr/bin/env bash
# Soak: sessions churning through the frontend journey for a bounded time
# against a release build (examples/soak.rs drives it and samples the server's
# resident memory, open fds, threads, live tokio tasks and session gauges),
# then a drain: every abandoned session must expire, every created session be
# counted as ended exactly once, and tasks and fds return to their level
# before the load.
# Usage: loadtest/soak.sh [seconds, default 600] [memory|redis, default memory]
# Env: WORKERS (48), USERS (5000), CHECK=1 to exit non-zero when a check fails,
# PROFILE=debug to use the debug build (the test command's short run).
# Short sessions (idle_ttl 20s) and idempotency records (ttl 60s) make the
# whole lifecycle turn over many times in a ten-minute run (examples/soak.rs
# knows the 60 s as IDEMPOTENCY_TTL).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
BACKEND=${2:-memory}
SECRET=soak-secret-soak-secret-soak-secret-0123
IDLE=20
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release --quiet --bin sessiongate --example soak
else cargo build --quiet --bin sessiongate --example soak; fi
BIN=target/$PROFILE
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

STORE=()
if [ "$BACKEND" = redis ]; then
  command -v redis-server >/dev/null || { echo "missing redis-server (apt-get install redis-server)"; exit 1; }
  rp=$(free_port); rdir=$(mktemp -d)
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$rdir" >/dev/null & PIDS+=($!)
  up=0; for _ in $(seq 50); do redis-cli -p "$rp" ping >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ "$up" = 1 ] || { echo "soak: redis-server on $rp did not start"; exit 1; }
  STORE=(SESSIONGATE__STORE__BACKEND=redis SESSIONGATE__STORE__REDIS_URL=redis://127.0.0.1:$rp)
fi
p=$(free_port)
env -i PATH="$PATH" SESSIONGATE__SERVER__LISTEN=127.0.0.1:$p SESSIONGATE__AUTH__HS256_SECRET=$SECRET \
  SESSIONGATE__TELEMETRY__LOG_LEVEL=warn \
  SESSIONGATE__SESSIONS__IDLE_TTL=${IDLE}s SESSIONGATE__SESSIONS__IDEMPOTENCY_TTL=60s \
  SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=0,burst=1}' SESSIONGATE__RATE_LIMIT__POLICIES='[]' \
  "${STORE[@]}" $BIN/sessiongate >/dev/null 2>&1 &
pid=$!; PIDS+=($pid)
up=0; for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/readyz" && { up=1; break; }; sleep 0.1; done
[ "$up" = 1 ] || { echo "soak: sessiongate on $p never became ready"; exit 1; }
echo "soak: $SECS s on the $BACKEND store, $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
$BIN/examples/soak --url "http://127.0.0.1:$p" --pid "$pid" --secret "$SECRET" --secs "$SECS" \
  --workers "${WORKERS:-48}" --users "${USERS:-5000}" --idle-ttl "$IDLE" --sample "${SAMPLE:-$(( SECS >= 300 ? 30 : 5 ))}" \
  ${CHECK:+--check}
if [ "$BACKEND" = redis ]; then
  echo "redis: $(redis-cli -p "$rp" dbsize) keys left, used_memory $(redis-cli -p "$rp" info memory | awk -F: '/^used_memory_human/ {print $2}' | tr -d '\r'); by kind (s session, u user index, i idempotency record, k user's idempotency keys, exp, act, config):"
  redis-cli -p "$rp" --scan | sed -E 's/^[^}]*\}?:?([a-z]+).*/\1/' | sort | uniq -c | sort -rn | head
fi
