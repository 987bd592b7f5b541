#!/usr/bin/env bash
# Each hand-written fast path measured on its own: for every patch in
# loadtest/ab/ (each puts one library back in place of one hand-written
# path, everything else the same), instructions per request of the code as
# it is and of the code with that patch, counted by loadtest/instructions.sh
# in the same checkout path and target directory. The table it prints is
# what the ledger in docs/performance.md records.
#
# A patch that no longer applies means the code it measures has changed:
# remake it against the new code (the ledger row's "re-measure" says when).
# A patch's first lines (before its diff) say what it measures:
#   Stacks: memory redis   which of instructions.sh's stacks it touches
#   Timed: yes             also time both (for a gain in system calls and
#                          wake-ups, which callgrind does not count)
# and, in prose, what it replaces and how to read the result.
#
# Timed: the memory stack of the code as it is and of the patched code,
# each under wrk (one thread, CONNS=32 connections, SECS=10 seconds) in
# turn, ROUNDS=5 times; the figure is the server's CPU time (user + system,
# from /proc) per request, median of the rounds with its range.
#
# Usage: [N=1000] [WARM=300] loadtest/ab.sh [loadtest/ab/NAME.patch ...]
# (default: every patch there, about an hour for all of them on two
# cores; several in one call share the first count). Needs what
# instructions.sh needs, and wrk for a timed patch. Builds
# once per patch (release, fat LTO: minutes each on two cores) in
# target/ab/, and measures the working tree as it is, uncommitted changes
# included (untracked files are not).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export N=${N:-1000} WARM=${WARM:-300}
if [ $# -eq 0 ]; then set -- loadtest/ab/*.patch; fi
PATCHES=()
for p in "$@"; do PATCHES+=("$(realpath "$p")"); done

# The stacks a patch touches, from its "Stacks:" line.
stacks_of() { sed -n 's/^Stacks: *//p' "$1" | head -1; }
ALL=""
for p in "${PATCHES[@]}"; do
  s=$(stacks_of "$p")
  [ -n "$s" ] || { echo "$p: no 'Stacks:' line before its diff" >&2; exit 1; }
  for x in $s; do [[ " $ALL " == *" $x "* ]] || ALL="$ALL $x"; done
done

# One checkout, always at the same path (paths end up in the binary), of the
# working tree as it is now: `git stash create` makes a commit of it without
# touching the tree (nothing to stash: HEAD).
BASE=$(git stash create)
BASE=${BASE:-HEAD}
WT=${TMPDIR:-/tmp}/sessiongate-ab
export CARGO_TARGET_DIR=${AB_TARGET_DIR:-$ROOT/target/ab}
# One A/B at a time on this machine (the checkout's path is fixed).
exec 9>"$WT.lock"
flock 9
git worktree remove --force "$WT" 2>/dev/null || rm -rf "$WT"
git worktree prune
git worktree add --quiet --detach "$WT" "$BASE"
OUT=$(mktemp -d)
cleanup() { git -C "$ROOT" worktree remove --force "$WT" 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT

# measure NAME STACKS: instructions.sh in the checkout; rows into $OUT/NAME.
measure() {
  echo "== $1 ($2)" >&2
  (cd "$WT" && STACKS="$2" loadtest/instructions.sh) | tee -a /dev/stderr \
    | awk '$1 ~ /^(memory|redis|redis-server)$/ { print $1, $2 }' >"$OUT/$1"
  cp "$CARGO_TARGET_DIR/release/sessiongate" "$OUT/$1.bin"
}

SECRET=bench-secret-bench-secret-bench-secret-0123
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# timed BIN: one wrk run against BIN's memory stack; prints "cpu_us_per_request req/s".
timed() {
  local port pid token id before after out reqs
  port=$(free_port)
  env -i PATH="$PATH" SESSIONGATE__AUTH__HS256_SECRET=$SECRET SESSIONGATE__TELEMETRY__LOG_LEVEL=info \
    SESSIONGATE__SERVER__LISTEN=127.0.0.1:$port \
    SESSIONGATE__RATE_LIMIT__PER_IP='{per_second=1000000,burst=1000000}' \
    SESSIONGATE__RATE_LIMIT__POLICIES='[{name="default",limit=1000000000,window="60s"}]' \
    "$1" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
  token=$(env -i SESSIONGATE__AUTH__HS256_SECRET=$SECRET "$1" token --sub bench --ttl 1h)
  id=$(curl -sf -X POST "http://127.0.0.1:$port/v1/sessions" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"tool_set":"general"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  before=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(wrk -t1 -c"${CONNS:-32}" -d"${SECS:-10}s" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/sessions/$id")
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  python3 -c 'import sys; ticks, clk, reqs, secs = map(float, sys.argv[1:]); print(f"{ticks / clk * 1e6 / reqs:.2f} {reqs / secs:.0f}")' \
    "$(( after - before ))" "$(getconf CLK_TCK)" "$reqs" "${SECS:-10}"
}

measure base "$ALL"
for p in "${PATCHES[@]}"; do
  name=$(basename "$p" .patch)
  git -C "$WT" checkout --quiet --force "$BASE"
  git -C "$WT" clean --quiet -fd
  git -C "$WT" apply "$p" || { echo "$name: the patch no longer applies; remake it against the code as it is" >&2; exit 1; }
  measure "$name" "$(stacks_of "$p")"
done

TIMED=()
for p in "${PATCHES[@]}"; do grep -q '^Timed: *yes' "$p" && TIMED+=("$(basename "$p" .patch)"); done
if [ ${#TIMED[@]} -gt 0 ]; then
  command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)" >&2; exit 1; }
  for r in $(seq "${ROUNDS:-5}"); do
    for name in base "${TIMED[@]}"; do
      echo "$name $(timed "$OUT/$name.bin")" | tee -a "$OUT/timed.$r" >&2
    done
  done
fi

echo
echo "Instructions per request, the code as it is (ours) and with each patch (library); N=$N, $(date -u +%F)"
python3 - "$OUT" "${PATCHES[@]}" <<'PY'
import os, sys
out, patches = sys.argv[1], sys.argv[2:]
def rows(name):
    return {l.split()[0]: float(l.split()[1]) for l in open(os.path.join(out, name)) if l.strip()}
base = rows("base")
print(f"{'patch':<22} {'stack':<13} {'ours':>8} {'library':>8} {'library-ours':>13} {'gain':>7}")
for p in patches:
    name = os.path.basename(p)[: -len(".patch")]
    for stack, lib in rows(name).items():
        ours = base[stack]
        print(f"{name:<22} {stack:<13} {ours:>8.0f} {lib:>8.0f} {lib - ours:>+13.0f} {(lib - ours) / lib:>+7.1%}")
rounds = [dict((l.split()[0], float(l.split()[1])) for l in open(os.path.join(out, f)))
          for f in sorted(os.listdir(out)) if f.startswith("timed.")]
if rounds:
    print()
    print("Timed, memory stack: server CPU µs per request (median of the rounds, range); ratio within each round")
    med = lambda xs: sorted(xs)[len(xs) // 2]
    for name in rounds[0]:
        us = [r[name] for r in rounds]
        ratio = [r[name] / r["base"] for r in rounds]
        print(f"{name:<22} {med(us):6.2f} µs ({min(us):.2f}-{max(us):.2f})  vs ours {med(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})")
PY
