#!/usr/bin/env bash
# Quickstart, command 2 of 2: install everything, then run the whole test suite.
# CI runs exactly this (.ci/run). Extra arguments go to pytest, e.g. scripts/test.sh -k deploy.
#
#   PHOTOSCORE_DATASET_DIR        labelled data (default ../shared/data beside the checkout)
#   PHOTOSCORE_TEST_POSTGRES_URL  PostgreSQL for the replica tests (default 127.0.0.1:5432)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'test: %s\n' "$*"; }

"$ROOT/scripts/install.sh"
VENV="${PHOTOSCORE_VENV:-$ROOT/.venv}"
if [[ "$VENV" != none ]]; then
  export PATH="$VENV/bin:$PATH"
fi

# PostgreSQL: the replica tests need a real server. Start the local cluster if it is down.
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2; }
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_up; then
    if [[ "$(id -u)" -eq 0 && -d /etc/postgresql ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
      for version in /etc/postgresql/*/; do
        version="$(basename "$version")"
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
      done
      for _ in $(seq 1 30); do
        pg_up && break
        sleep 1
      done
    fi
    pg_up || say "WARNING: PostgreSQL is not answering on 127.0.0.1:5432; its tests will fail"
  fi
else
  say "WARNING: pg_isready not found (PostgreSQL client missing); PostgreSQL tests will fail"
fi

say "ruff check . && ruff format --check ."
ruff check .
ruff format --check .

say "lint-imports (imports point down the layers) && mypy (api, core, services, evaluation, model, indexer)"
lint-imports
mypy

say "pytest $*"
exec pytest "$@"
