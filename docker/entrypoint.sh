#!/usr/bin/env bash
# Container entry point.
#   serve [OPTIONS]          the API and web page (default); PHOTOSCORE_PRESTART=1 migrates first
#   migrate                  wait for the database and apply migrations (docker/prestart.sh)
#   index|train|evaluate|predict ARGS   the matching `photoscore` sub-command
#   index-ray ARGS           `photoscore index --engine ray` driven from this container, which first
#                            joins the cluster at $RAY_ADDRESS as a node without CPUs
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
  index-ray)
    # A Ray driver must run on a node of its cluster (ray.init finds the cluster through the local
    # raylet): join as a node with no CPUs or GPUs, so the work still runs on the head and workers.
    address="${RAY_ADDRESS:?set RAY_ADDRESS to the Ray head, e.g. ray-head:6379}"
    ray start --address="$address" --num-cpus=0 --num-gpus=0 --disable-usage-stats >&2
    exec photoscore index --engine ray --ray-address "$address" "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac
