#!/usr/bin/env bash
# A store fault under traffic against a release build: a Redis Cluster master
# killed (its replica takes over), or a single Redis killed and restarted.
# Prints, per run, when the store healed, the last failed request after that,
# the share of requests that failed and from how many users, and whether
# every session survived. Loopback only, bounded in time.
# Usage: loadtest/failover.sh [cluster|redis, default cluster] [runs, default 3]
# Env: USERS (24), SECS per run (12), PROFILE=debug for the debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-cluster}
RUNS=${2:-3}
PROFILE=${PROFILE:-release}
command -v redis-server >/dev/null || { echo "missing redis-server (apt-get install redis-server)"; exit 1; }
if [ "$PROFILE" = release ]; then cargo build --release --quiet --bin sessiongate
else cargo build --quiet --bin sessiongate; fi
echo "failover: $MODE, $RUNS runs, $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(redis-server --version | cut -d' ' -f3)"
exec python3 loadtest/failover.py "target/$PROFILE/sessiongate" "$MODE" --runs "$RUNS" \
  --users "${USERS:-24}" --secs "${SECS:-12}"
