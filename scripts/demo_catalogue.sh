#!/usr/bin/env bash
# Index the demo catalogue: the Battle for Wesnoth soundtrack that Debian ships in
# wesnoth-1.16-music (41 orchestral Ogg Vorbis tracks, 128 min, GPL-2+), with its licence
# and attribution recorded on every track. Idempotent: tracks already indexed with the current
# checkpoint are skipped; tracks embedded by an older checkpoint are re-embedded (--reembed).
#
#   scripts/demo_catalogue.sh [extra `photoscore index` options, e.g. --workers 4]
#
#   PHOTOSCORE_DEMO_MUSIC   folder to index instead (default: the Wesnoth music folder)
#   PHOTOSCORE_DEMO_LICENSE licence/attribution text to record instead
# The database and index come from the usual settings (PHOTOSCORE_DATA_DIR, ...DATABASE_URL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGE=wesnoth-1.16-music
MUSIC_DIR="${PHOTOSCORE_DEMO_MUSIC:-/usr/share/games/wesnoth/1.16/data/core/music}"
COPYRIGHT="/usr/share/doc/$PACKAGE/copyright"

PHOTOSCORE="photoscore"
if ! command -v photoscore >/dev/null 2>&1; then
  PHOTOSCORE="${PHOTOSCORE_VENV:-$ROOT/.venv}/bin/photoscore"
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

echo "demo_catalogue: indexing $MUSIC_DIR (already indexed tracks are skipped)"
exec "$PHOTOSCORE" index "$MUSIC_DIR" --reembed --license "$PHOTOSCORE_DEMO_LICENSE" "${args[@]}" "$@"
