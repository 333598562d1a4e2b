#!/usr/bin/env bash
# Wait until the database answers, then bring its schema to the latest migration.
# Idempotent, so it is safe on every deploy; the Compose `migrate` service runs it once before
# the API replicas start (they also migrate at start-up, under a PostgreSQL advisory lock).
#   PHOTOSCORE_DATABASE_URL     the database (default: the embedded SQLite file)
#   PHOTOSCORE_DB_WAIT_SECONDS  how long to wait for it (default 60)
set -euo pipefail

PYTHON="${PHOTOSCORE_PYTHON:-python}"

exec "$PYTHON" - <<'PY'
import os
import sys
import time

from app.core.db import DatabaseUnavailableError, check_database, upgrade_database
from app.core.settings import Settings

url = Settings().resolved_database_url
deadline = time.monotonic() + float(os.environ.get("PHOTOSCORE_DB_WAIT_SECONDS", "60"))
attempt = 0
while True:
    attempt += 1
    try:
        check_database(url, timeout_s=3.0)
        break
    except DatabaseUnavailableError as exc:
        if time.monotonic() >= deadline:
            print(f"prestart: giving up after {attempt} attempts: {exc}", file=sys.stderr)
            sys.exit(1)
        if attempt == 1 or attempt % 10 == 0:
            print(f"prestart: waiting for the database: {exc}", file=sys.stderr)
        time.sleep(1.0)
upgrade_database(url)
print("prestart: database reachable and migrated to head")
PY
