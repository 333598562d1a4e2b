#!/usr/bin/env bash
# Index the demo catalogue: freely licensed music that Debian packages, chosen to span moods, with
# each track's composer and title from its tags and its licence and attribution recorded on it:
#   wesnoth-1.16-music   The Battle for Wesnoth: 40 orchestral tracks, epic and sombre (GPL-2+)
#   hyperrogue-music     HyperRogue: 17 tracks by three composers, light to eerie (CC BY-SA 3.0)
#   singularity-music    Endgame: Singularity: 16 electronic/ambient tracks by Maxstack (CC BY-SA 3.0)
#   warzone2100-music    Warzone 2100: 29 tense electronic/rock tracks, LupusMechanicus, Martin Severn (GPL-2+)
#   extremetuxracer-data Extreme Tux Racer: 10 bright tracks by four composers (GPL-2+)
#   xmoto-data           X-Moto: 7 energetic tracks, mostly by Jens Erler (GPL-2+)
#   frozen-bubble-data   Frozen Bubble: 3 tracks by Matthias Le Bidan (GPL-2)
# The extra packages go through CSV manifests (scripts/demo_manifest.py) because their tags and
# licences differ per file. Idempotent: tracks already indexed with the current checkpoint are
# skipped; tracks embedded by an older checkpoint are re-embedded (--reembed).
#
#   scripts/demo_catalogue.sh [extra `photoscore index` options, e.g. --workers 4]
#
#   PHOTOSCORE_DEMO_MUSIC   one folder to index instead of the whole demo catalogue
#   PHOTOSCORE_DEMO_LICENSE licence/attribution text to record for that folder
# The database and index come from the usual settings (PHOTOSCORE_DATA_DIR, ...DATABASE_URL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGE=wesnoth-1.16-music
MUSIC_DIR="${PHOTOSCORE_DEMO_MUSIC:-/usr/share/games/wesnoth/1.16/data/core/music}"
COPYRIGHT="/usr/share/doc/$PACKAGE/copyright"

EXTRA_PACKAGES=(
  hyperrogue-music singularity-music
  warzone2100-music extremetuxracer-data xmoto-data frozen-bubble-data
)
# What the service's /ready and page say while this runs ("indexing the demo library: 12 of 73
# songs"): `photoscore index` rewrites <PHOTOSCORE_DATA_DIR>/indexing.json after every track.
LABEL="the demo library"

PHOTOSCORE="photoscore"
PYTHON="python3"
if ! command -v photoscore >/dev/null 2>&1; then
  PHOTOSCORE="${PHOTOSCORE_VENV:-$ROOT/.venv}/bin/photoscore"
  PYTHON="${PHOTOSCORE_VENV:-$ROOT/.venv}/bin/python"
fi

if [[ ! -d "$MUSIC_DIR" ]]; then
  echo "demo_catalogue: $MUSIC_DIR not found: apt-get install $PACKAGE (scripts/install.sh does)" >&2
  exit 1
fi

if [[ -z "${PHOTOSCORE_DEMO_LICENSE:-}" ]]; then
  # Attribution as Debian's copyright file gives it: upstream, copyright holders, licence.
  version="$(dpkg-query -W -f='${Version}' "$PACKAGE" 2>/dev/null || echo unknown)"
  if [[ -f "$COPYRIGHT" ]] && ! grep -q "GNU General Public License version 2" "$COPYRIGHT"; then
    echo "demo_catalogue: warning: $COPYRIGHT no longer says GPL version 2; check the licence text" >&2
  fi
  PHOTOSCORE_DEMO_LICENSE="Music from The Battle for Wesnoth (https://www.wesnoth.org/), \
Copyright (C) 2003-2009 David White and the Wesnoth contributors; composer in each track's \
artist field. Free software under the GNU General Public License version 2 or (at your option) \
any later version. Debian package $PACKAGE $version; see $COPYRIGHT."
fi

args=()
if [[ -z "${PHOTOSCORE_WORKERS:-}" ]]; then
  args+=(--workers "$(nproc 2>/dev/null || echo 1)")
fi

if [[ -n "${PHOTOSCORE_DEMO_MUSIC:-}" ]]; then
  echo "demo_catalogue: indexing $MUSIC_DIR (already indexed tracks are skipped)"
  exec "$PHOTOSCORE" index "$MUSIC_DIR" --reembed --license "$PHOTOSCORE_DEMO_LICENSE" \
    --progress-label "$LABEL" "${args[@]}" "$@"
fi

# The other packages: one manifest each (per-file composer, title, licence and attribution),
# written beside the catalogue (rewritten on every run) so that the indexer can replace this
# script (exec): a signal to the process group then reaches `photoscore index` itself.
manifests=()
manifest_dir="${PHOTOSCORE_DATA_DIR:-var}/demo-manifests"
mkdir -p "$manifest_dir"
for package in "${EXTRA_PACKAGES[@]}"; do
  "$PYTHON" "$ROOT/scripts/demo_manifest.py" "$package" "$manifest_dir/$package.csv" >/dev/null ||
    { echo "demo_catalogue: apt-get install ${EXTRA_PACKAGES[*]} (scripts/install.sh does)" >&2; exit 1; }
  manifests+=("$manifest_dir/$package.csv")
done

# One run for the whole library, so its progress counts every song ("12 of 73 songs"); the
# manifests carry each file's own licence, --license is Wesnoth's.
echo "demo_catalogue: indexing ${EXTRA_PACKAGES[*]} $MUSIC_DIR (already indexed tracks are skipped)"
exec "$PHOTOSCORE" index "${manifests[@]}" "$MUSIC_DIR" --reembed --license "$PHOTOSCORE_DEMO_LICENSE" \
  --progress-label "$LABEL" "${args[@]}" "$@"
