#!/usr/bin/env bash
# cargo-fuzz (libFuzzer) targets, each for a bounded time:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 s, every target)
#
# Targets (fuzz/fuzz_targets/, properties in fuzz/src/props/):
#   jwt_verify         Authorization header, API key, bearer and signed tokens
#   config_load        Config::from_toml + validate, check-config's rendering,
#                      the runtime-config merge patch
#   ratelimit_headers  RateLimit-Policy / RateLimit / Retry-After rendering
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# nightly-only flags (-Zsanitizer=address and the coverage instrumentation).
# FUZZ_SANITIZER=none turns AddressSanitizer off.
#
# Seeds come from fuzz/corpus/<target>/ (committed, never written to); what
# the fuzzer adds goes to fuzz/corpus-local/<target>/ (ignored by git), so a
# later run starts from there. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit non-zero, after the
# other targets have run. To keep one as a regression test: minimise it
# (`RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> <file>`), copy it into
# fuzz/regressions/<target>/, and `cargo test --test fuzz_regressions`
# replays it (as it replays every seed) on stable without cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(jwt_verify config_load ratelimit_headers)
sanitizer="${FUZZ_SANITIZER:-address}"

log() { printf '\n==> %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

failed=()
for target in "${targets[@]}"; do
  args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096)
  case "$target" in
    jwt_verify) args+=(-dict=fuzz/dicts/jwt.dict -max_len=9000) ;;
    config_load) args+=(-dict=fuzz/dicts/config.dict -max_len=8192) ;;
    ratelimit_headers) args+=(-max_len=512) ;;
    *) echo "unknown target: $target" >&2; exit 2 ;;
  esac
  mkdir -p "fuzz/corpus-local/$target"
  log "cargo fuzz run $target for ${seconds}s (sanitizer: $sanitizer)"
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" \
    "fuzz/corpus-local/$target" "fuzz/corpus/$target" -- "${args[@]}"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
  exit 1
fi
log "no crash in ${targets[*]} (${seconds}s each)"
