#!/usr/bin/env bash
# Quickstart, command 1 of 2: install everything and serve PhotoScore on the embedded default
# (SQLite, an on-disk FAISS index, the shipped model) with a catalogue of real, freely licensed
# music. Run it again at any time: every step is idempotent.
#
#   1. scripts/install.sh (Debian packages when root, .venv, the project without PyTorch)
#   2. an API key for writes, generated once into $PHOTOSCORE_DATA_DIR/api-key (mode 600)
#   3. database migrations
#   4. `photoscore serve`, and at the same time the demo catalogue in the background
#      (scripts/demo_catalogue.sh; indexed tracks are skipped, so a re-run resumes)
#   5. once the service answers, it prints the page URL, the API docs URL and the API key
#
# The service answers from the tracks indexed so far (its live index follows the database);
# /ready and the page show the indexer's progress, which `photoscore index` writes to
# $PHOTOSCORE_DATA_DIR/indexing.json. Ctrl+C stops the service and the indexer.
#
# Environment: PHOTOSCORE_HOST (127.0.0.1), PHOTOSCORE_PORT (8000), PHOTOSCORE_DATA_DIR (var),
# PHOTOSCORE_API_KEYS (use these keys instead of the stored one), and every other PHOTOSCORE_
# setting (docs/CONFIGURATION.md). PHOTOSCORE_SKIP_INSTALL=1 skips step 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'quickstart: %s\n' "$*"; }

if [[ "${PHOTOSCORE_SKIP_INSTALL:-0}" != 1 ]]; then
  # Serving and indexing need no PyTorch (ONNX Runtime): no extras unless PHOTOSCORE_EXTRAS asks.
  "$ROOT/scripts/install.sh" --extras "${PHOTOSCORE_EXTRAS-}"
fi
VENV="${PHOTOSCORE_VENV:-$ROOT/.venv}"
if [[ "$VENV" != none ]]; then
  export PATH="$VENV/bin:$PATH"
fi
command -v photoscore >/dev/null 2>&1 || { say "photoscore is not installed (scripts/install.sh)"; exit 1; }

export PHOTOSCORE_DATA_DIR="${PHOTOSCORE_DATA_DIR:-var}"
export PHOTOSCORE_HOST="${PHOTOSCORE_HOST:-127.0.0.1}"
export PHOTOSCORE_PORT="${PHOTOSCORE_PORT:-8000}"
mkdir -p "$PHOTOSCORE_DATA_DIR"

# -------------------------------------------------------------------------------- API key
key_file="$PHOTOSCORE_DATA_DIR/api-key"
if [[ -n "${PHOTOSCORE_API_KEYS:-}" ]]; then
  # The first key as the service reads the setting (comma separated or a JSON list).
  api_key="$(python3 -c 'from app.core.settings import Settings; keys = Settings().api_keys; print(keys[0] if keys else "")')" ||
    { say "PHOTOSCORE_API_KEYS cannot be used (see above)"; exit 1; }
  key_note="from PHOTOSCORE_API_KEYS"
else
  if [[ ! -s "$key_file" ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$key_file")
    say "generated an API key in $key_file"
  fi
  chmod 600 "$key_file"
  api_key="$(tr -d '[:space:]' <"$key_file")"
  export PHOTOSCORE_API_KEYS="$api_key"
  key_note="stored in $key_file"
fi

# ----------------------------------------------------------------------- database + catalogue
python3 - <<'PY'
from app.core.db import upgrade_database
from app.core.settings import Settings

url = Settings().resolved_database_url
upgrade_database(url)
print(f"quickstart: database ready ({url})")
PY

# ------------------------------------------------------------------------------------ serve
url_host="$PHOTOSCORE_HOST"
case "$url_host" in
  0.0.0.0 | "::" | "") url_host=127.0.0.1 ;;
  *:*) url_host="[$url_host]" ;;
esac
base_url="http://$url_host:$PHOTOSCORE_PORT"

if python3 - "$PHOTOSCORE_HOST" "$PHOTOSCORE_PORT" <<'PY'; then
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port), timeout=1).close()
except OSError:
    sys.exit(1)  # nothing listens there: free
PY
  say "port $PHOTOSCORE_PORT on $PHOTOSCORE_HOST is already in use: stop what runs there or set PHOTOSCORE_PORT"
  exit 1
fi

# Each in its own session: Ctrl+C reaches this script alone, which stops both once, cleanly, by
# TERM: the server (uvicorn shuts down) and the indexer's whole process group (`photoscore index`
# keeps its committed tracks and its status file says "interrupted"; its decoding workers end).
# Then it waits for both. (TERM, not INT: bash starts background jobs with SIGINT ignored.)
setsid photoscore serve &
server=$!
indexer=
stopped=0
stop() {
  # Once: a second TERM would cut short the indexer's own clean stop.
  [[ $stopped -eq 1 ]] && return 0
  stopped=1
  trap - INT TERM HUP
  kill -TERM "$server" 2>/dev/null || true
  if [[ -n "$indexer" ]]; then
    kill -TERM -- "-$indexer" 2>/dev/null || true
  fi
}
trap stop INT TERM HUP

say "indexing the demo catalogue in the background (progress on the page and at /ready)"
setsid "$ROOT/scripts/demo_catalogue.sh" --no-progress &
indexer=$!

say "starting the service (loading the model and the index)..."
if ! python3 - "$base_url/health" "$server" <<'PY'; then
import os
import sys
import time
import urllib.request

url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + float(os.environ.get("PHOTOSCORE_START_TIMEOUT", "300"))
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)  # the server exited; it said why
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
  say "the service did not start (see the messages above)"
  stop
  wait "$indexer"
  wait "$server" || exit $?
  exit 1
fi

cat <<EOF

  PhotoScore is running.
    Web page   $base_url/
    API docs   $base_url/docs
    API key    $api_key   ($key_note)

  Try:  curl -F image=@/usr/share/backgrounds/mate/nature/Storm.jpg '$base_url/recommend?n=5'
  Stop: Ctrl+C

EOF

set +e
wait "$server"
status=$?
# A second wait: the first one returns early when a trapped signal arrives.
if kill -0 "$server" 2>/dev/null; then
  wait "$server"
  status=$?
fi
# The service has stopped: so does the indexer (a re-run resumes it).
stop
wait "$indexer"
indexed=$?
if [[ $indexed -ne 0 && $indexed -ne 130 && $indexed -ne 143 ]]; then
  say "indexing the demo catalogue failed (exit status $indexed, see above); run command 1 again to resume"
fi
# Stopped by Ctrl+C or TERM: uvicorn shuts down cleanly; report success.
[[ $status -eq 130 || $status -eq 143 ]] && status=0
exit "$status"
