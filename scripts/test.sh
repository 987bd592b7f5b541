#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what it needs when missing, then: format check, clippy, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests use, installed only when their command is missing.
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# promtool and prometheus: the exposition, rules, alerts and dashboards are
# checked by the real thing.
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
# node: syntax checks of the k6 scripts in loadtest/ (k6 itself is never installed).
command -v node >/dev/null 2>&1 || need+=(nodejs)
# curl and python3 (with venv): the soak, the deploy checks and schemathesis.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Rust components: a fresh toolchain may lack them.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "installing rust component $component"
    rustup component add "$component"
  fi
done

# The docs: no dead relative link (files and #anchors, GitHub's slugs) in
# README.md, docs/ and loadtest/; the dependency list comes from cargo metadata.
log "scripts/check_links.py"
python3 scripts/check_links.py --self-test
python3 scripts/check_links.py
log "scripts/deps.sh"
./scripts/deps.sh --tsv >/dev/null

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

log "cargo test"
cargo test --locked --all-targets

# A short soak on each store (debug build): sessions churn through the
# journey, then every session must end exactly once and the process's tasks
# and file descriptors return to their level before the load. (Memory is
# judged only in the long run: loadtest/soak.sh 600.)
for backend in memory redis; do
  log "loadtest/soak.sh 15 $backend"
  CHECK=1 PROFILE=debug WORKERS=16 USERS=500 ./loadtest/soak.sh 15 $backend
done

# The Python tools (PyPI) live in a virtual environment of their own, kept
# between runs: a system Python may refuse packages (Debian's is "externally
# managed", PEP 668), and a user install may land off PATH.
VENV=${SESSIONGATE_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sessiongate/test-venv}
if ! "$VENV/bin/python" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1 || [ ! -x "$VENV/bin/st" ]; then
  log "installing pyyaml, kubernetes-validate and schemathesis (PyPI) into $VENV"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check pyyaml kubernetes-validate schemathesis
fi
export PATH="$VENV/bin:$PATH"

# Deploy artifacts (Docker is not needed: YAML, Kubernetes schemas, compose
# cross-references, the Dockerfile's needs, configs through check-config).
log "scripts/check_deploy.py"
SESSIONGATE_BIN=target/debug/sessiongate python scripts/check_deploy.py

# Schema-based fuzzing of the running server against its OpenAPI document.
log "scripts/schemathesis.sh"
SESSIONGATE_BIN=target/debug/sessiongate ./scripts/schemathesis.sh
