#!/usr/bin/env bash
# A real container engine for the container test (tests/deploy/test_containers.py), on a machine with
# no Docker daemon: Debian's podman serves the Docker Engine API on a socket, and the real Docker
# CLI and the real Docker Compose binary drive it, as an operator's would drive dockerd.
#
#   scripts/container_engine.sh start   install podman (root, Debian), configure it, start its
#                                       Docker-compatible API service and a healthcheck ticker,
#                                       build the stand-in base images if missing; the last line
#                                       printed is DOCKER_HOST=unix://...
#   scripts/container_engine.sh stop    stop the service and ticker this script started
#
# STAND-IN BASE IMAGES. No registry is reachable here, so the third-party base images the
# project names (python:3.11.14-slim-bookworm, postgres:15.13-bookworm,
# nginxinc/nginx-unprivileged:1.28.0-alpine) are replaced by images built from Debian bookworm
# packages (debootstrap, then tests/containers/*.Containerfile) with the same entry points,
# users, ports and paths, tagged with those names. The project's own Dockerfiles, entry points,
# healthchecks, proxy config and Compose file run unchanged.
#
# Cached between runs on the same machine: podman's store (/var/lib/containers/storage) keeps
# the stand-ins and the build cache, so debootstrap and the stand-in builds run once per machine.
#
#   PHOTOSCORE_ENGINE_STATE  folder for the socket, pids and logs (default /run/photoscore-engine)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${PHOTOSCORE_ENGINE_STATE:-/run/photoscore-engine}"
SOCKET="$STATE/podman.sock"
STANDINS="$ROOT/tests/containers"
APT_ENGINE=(podman runc debootstrap netavark aardvark-dns iptables)
# The names the Dockerfiles and docker-compose.yml use, fully qualified as Docker resolves them.
PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm
POSTGRES_IMAGE=docker.io/library/postgres:15.13-bookworm
NGINX_IMAGE=docker.io/nginxinc/nginx-unprivileged:1.28.0-alpine
DEBIAN_IMAGE=localhost/photoscore-standin/debian:bookworm

say() { printf 'engine: %s\n' "$*" >&2; }
die() { printf 'engine: error: %s\n' "$*" >&2; exit 1; }

install_engine() {
  local missing=() pkg
  for pkg in "${APT_ENGINE[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  command -v docker >/dev/null 2>&1 || missing+=(docker.io) # the Docker CLI (Debian ships it there)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ "$(id -u)" -eq 0 ]] || die "not root: apt-get install -y ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

configure_engine() {
  # The sandbox refuses setrlimit(NOFILE/NPROC); crun refuses its cgroup layout; no systemd.
  mkdir -p /etc/containers/containers.conf.d
  cat >/etc/containers/containers.conf.d/50-photoscore-test.conf <<'EOF'
# Written by PhotoScore's scripts/container_engine.sh (container test).
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
}

start_service() {
  mkdir -p "$STATE"
  if [[ -S "$SOCKET" ]] && DOCKER_HOST="unix://$SOCKET" docker version >/dev/null 2>&1; then
    say "API service already running on $SOCKET"
    return 0
  fi
  rm -f "$SOCKET"
  setsid podman system service --time=0 "unix://$SOCKET" >"$STATE/service.log" 2>&1 &
  echo $! >"$STATE/service.pid"
  for _ in $(seq 1 60); do
    DOCKER_HOST="unix://$SOCKET" docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  DOCKER_HOST="unix://$SOCKET" docker version >/dev/null 2>&1 ||
    die "podman's API service did not answer on $SOCKET (see $STATE/service.log)"
  # Podman runs healthchecks from systemd timers; without systemd nothing would run them, and
  # every service_healthy condition would wait forever. This ticker stands in for the timers.
  setsid bash "$ROOT/scripts/container_engine.sh" ticker >"$STATE/ticker.log" 2>&1 &
  echo $! >"$STATE/ticker.pid"
}

ticker() {
  declare -A last=() interval=()
  while true; do
    local now id
    now=$(date +%s)
    for id in $(podman ps -q --no-trunc 2>/dev/null); do
      if [[ -z "${interval[$id]:-}" ]]; then
        local seconds
        seconds=$(podman inspect -f '{{if .Config.Healthcheck}}{{if .Config.Healthcheck.Test}}{{.Config.Healthcheck.Interval.Seconds}}{{end}}{{end}}' "$id" 2>/dev/null || true)
        seconds="${seconds%%.*}"
        if [[ -z "$seconds" ]]; then
          interval[$id]=none
        elif [[ "$seconds" == 0 ]]; then
          interval[$id]=30 # Docker's default interval
        else
          interval[$id]=$seconds
        fi
      fi
      [[ "${interval[$id]}" == none ]] && continue
      if ((now - ${last[$id]:-0} >= ${interval[$id]})); then
        last[$id]=$now
        podman healthcheck run "$id" >/dev/null 2>&1 &
      fi
    done
    wait
    sleep 1
  done
}

debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -z "$uri" ]] && uri=$(awk '$1 == "deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_standins() {
  if ! podman image exists "$DEBIAN_IMAGE"; then
    local rootfs mirror
    rootfs="$(mktemp -d)"
    mirror="$(debian_mirror)"
    say "debootstrap bookworm from $mirror (once per machine)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 ||
      die "debootstrap failed (see $STATE/debootstrap.log)"
    tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
  fi
  local name image
  for name in python postgres nginx; do
    case "$name" in
      python) image="$PYTHON_IMAGE" ;;
      postgres) image="$POSTGRES_IMAGE" ;;
      nginx) image="$NGINX_IMAGE" ;;
    esac
    # Rebuilt when its Containerfile changes (the layer cache makes an unchanged one instant).
    say "stand-in $image"
    podman build --network host --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
      --label "org.opencontainers.image.description=PhotoScore test stand-in for $image, built from Debian packages" \
      -f "$STANDINS/$name.Containerfile" -t "$image" "$STANDINS" >"$STATE/standin-$name.log" 2>&1 ||
      die "stand-in $name failed to build (see $STATE/standin-$name.log)"
  done
}

stop_service() {
  local name pid
  for name in ticker service; do
    if [[ -f "$STATE/$name.pid" ]]; then
      pid="$(cat "$STATE/$name.pid")"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      rm -f "$STATE/$name.pid"
    fi
  done
  rm -f "$SOCKET"
}

case "${1:-}" in
  start)
    install_engine
    configure_engine
    mkdir -p "$STATE"
    start_service
    build_standins
    echo "DOCKER_HOST=unix://$SOCKET"
    ;;
  stop) stop_service ;;
  ticker) ticker ;;
  *) die "usage: $0 start|stop" ;;
esac
