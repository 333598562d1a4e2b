"""Container HEALTHCHECK: exit 0 when GET /health answers 200 (liveness, not readiness)."""

import os
import sys
import urllib.request

port = os.environ.get("PHOTOSCORE_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # connection refused, timeout, HTTP error
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
