#!/usr/bin/env bash
# Container entry point.
#   serve [OPTIONS]          the API and web page (default); PHOTOSCORE_PRESTART=1 migrates first
#   migrate                  wait for the database and apply migrations (docker/prestart.sh)
#   index|train|evaluate|predict ARGS   the matching `photoscore` sub-command
#   anything else            run as given (e.g. `bash`)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command="${1:-serve}"
[[ $# -gt 0 ]] && shift

case "$command" in
  serve)
    if [[ "${PHOTOSCORE_PRESTART:-0}" == 1 ]]; then
      "$here/prestart.sh"
    fi
    exec photoscore serve "$@"
    ;;
  migrate | prestart)
    exec "$here/prestart.sh" "$@"
    ;;
  index | train | evaluate | predict)
    exec photoscore "$command" "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac
