"""Write a `photoscore index` manifest (CSV: path,title,artist,album,license) for one Debian music
package of the demo catalogue, with each track's composer and title from its tags and the
licence and attribution that the package's Debian copyright file gives for that file.

    python scripts/demo_manifest.py PACKAGE OUT.csv

Why a manifest rather than a folder: one package can hold music by several composers under
different licences (hyperrogue-music), some files carry broken or no tags (titles that
accumulated every earlier track's title, no artist), some packages name their composers beside
the music rather than in tags (Warzone 2100's album.json, Extreme Tux Racer's music readme), and
some mix music with sound effects (Frozen Bubble); the manifest records what is right per file.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

AUDIO = (".ogg", ".opus", ".flac", ".mp3")


@dataclass(frozen=True)
class Package:
    """Where a package's music lies inside it, and the upstream project it comes from."""

    music_dir: Path
    prefix: str  # the music folder's path in the copyright file's Files: patterns
    project: str
    homepage: str
    licence_names: dict[str, str]  # DEP-5 short name -> full name
    only: tuple[str, ...] = ()  # file name patterns that are music (the rest: sound effects)
    # per-file facts the package states outside the tags: title, artist, album, holder
    facts: Callable[[Path], dict[str, str]] = field(default=lambda path: {})
    team: str | None = None  # the artist of untagged files when the copyright lists many holders


CC_BY_SA_3 = "Creative Commons Attribution-ShareAlike 3.0 (https://creativecommons.org/licenses/by-sa/3.0/)"
GPL_2_PLUS = "GNU General Public License version 2 or (at your option) any later version"


def warzone_facts(path: Path) -> dict[str, str]:
    """Warzone 2100 lists each album's tracks, titles and composer in album.json, and its
    license.txt opens with the album's copyright line."""
    album = json.loads((path.parent / "album.json").read_text(encoding="utf-8"))
    track = next((t for t in album["tracks"] if t["filename"] == path.name), None)
    if track is None:
        return {}
    facts = {"title": track["title"], "artist": track["author"], "album": f"Warzone 2100: {album['title']}"}
    licence_txt = path.parent / "license.txt"
    if licence_txt.is_file():
        found = re.search(r"Copyright \(C\) ([^\n]+)", licence_txt.read_text(encoding="utf-8", errors="replace"))
        if found and path.name != "track3_enhanced.opus":  # derived from Martin Severn's track 3
            facts["holder"] = found.group(1).strip()
    return facts


def etr_facts(path: Path) -> dict[str, str]:
    """Extreme Tux Racer names each file's composer in music/readme ("X composed:" + files)."""
    composer = None
    for line in (path.parent / "readme").read_text(encoding="utf-8", errors="replace").splitlines():
        if found := re.match(r"(\S.*?)\s*<[^>]*>\s*composed:", line):
            composer = found.group(1)
        elif composer and line.strip() == path.name:
            return {"artist": composer} | ({"title": ETR_TITLES[path.stem]} if path.stem in ETR_TITLES else {})
    return {}


ETR_TITLES = {  # file names run words together: "spunkyrace-ks"
    "calmrace-ks": "Calm Race",
    "lostrace-ks": "Lost Race",
    "options1-jt": "Options",
    "race1-jt": "Race",
    "raceintro-ks": "Race Intro",
    "spunkyrace-ks": "Spunky Race",
    "start1-jt": "Start",
    "wonrace1-jt": "Won Race",
}


def frozen_bubble_facts(path: Path) -> dict[str, str]:
    """Frozen Bubble's files carry no tags; its music is Matthias Le Bidan's (the game's credits)."""
    titles = {"introzik.ogg": "Intro", "frozen-mainzik-1p.ogg": "Main Theme (1 player)"}
    return {"artist": "Matthias Le Bidan", "title": titles.get(path.name, "Main Theme (2 players)")}


PACKAGES = {
    "singularity-music": Package(
        Path("/usr/share/games/singularity/music"),
        "",
        "Endgame: Singularity",
        "https://github.com/singularity/singularity",
        {"CC-BY-SA-3.0": CC_BY_SA_3},
    ),
    "hyperrogue-music": Package(
        Path("/usr/share/hyperrogue/music"),
        "music/",
        "HyperRogue",
        "https://roguetemple.com/z/hyper/",
        {"CC-BY-SA-3.0": CC_BY_SA_3, "GPL-2+": GPL_2_PLUS},
    ),
    # Energetic, tense and joyful music for the quadrants the three above leave thin.
    "warzone2100-music": Package(
        Path("/usr/share/games/warzone2100/music/albums"),
        "",
        "Warzone 2100",
        "https://wz2100.net/",
        {"GPL-2+": GPL_2_PLUS},
        only=("*.opus",),
        facts=warzone_facts,
    ),
    "extremetuxracer-data": Package(
        Path("/usr/share/games/etr/music"),
        "",
        "Extreme Tux Racer",
        "https://sourceforge.net/projects/extremetuxracer/",
        {"GPL-2+": GPL_2_PLUS},
        facts=etr_facts,
    ),
    "xmoto-data": Package(
        Path("/usr/share/games/xmoto/Textures/Musics"),
        "",
        "X-Moto",
        "https://xmoto.tuxfamily.org/",
        {"GPL-2+": GPL_2_PLUS},
        team="X-Moto Development Team",
    ),
    "frozen-bubble-data": Package(
        Path("/usr/share/games/frozen-bubble/snd"),
        "",
        "Frozen Bubble",
        "https://www.frozen-bubble.org/",
        {"GPL-2": "GNU General Public License version 2"},
        only=("introzik.ogg", "frozen-mainzik-*.ogg"),
        facts=frozen_bubble_facts,
    ),
}


@dataclass(frozen=True)
class Stanza:
    patterns: tuple[str, ...]
    copyright: str
    licence: str


def copyright_stanzas(text: str) -> list[Stanza]:
    """The Files stanzas of a machine-readable (DEP-5) Debian copyright file, in order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += " " + line.strip()
            elif ":" in line:
                current, _, value = line.partition(":")
                fields[current] = value.strip()
        if "Files" in fields and "License" in fields:
            stanzas.append(
                Stanza(tuple(fields["Files"].split()), fields.get("Copyright", ""), fields["License"].split()[0])
            )
    return stanzas


def stanza_for(stanzas: list[Stanza], name: str) -> Stanza | None:
    """DEP-5: the last stanza whose Files pattern matches wins."""
    found = None
    for stanza in stanzas:
        if any(fnmatch.fnmatchcase(name, p) for p in stanza.patterns):
            found = stanza
    return found


def tag(tags: dict, key: str, path: Path | None = None) -> str | None:
    """A tag's value. Some files carry several, every earlier track's title appended on each
    re-encode: then the one the file is named after (`hr3-icyland.ogg` -> "Icy Lands")."""
    values = [str(v).strip() for v in (tags.get(key) or []) if str(v).strip()]
    if len(values) > 1 and path is not None:
        words = [w for w in re.split(r"[^a-z]+", path.stem.lower()) if len(w) > 2]
        named = [v for v in values if any(w in re.sub(r"[^a-z]", "", v.lower()) for w in words)]
        if len(named) == 1:
            return named[0]
    return values[-1] if values else None


def rows(package: str) -> list[dict[str, str]]:
    import mutagen

    spec = PACKAGES[package]
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    ).stdout.strip()
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    stanzas = copyright_stanzas(text)
    out = []
    for path in sorted(p for p in spec.music_dir.rglob("*") if p.suffix.lower() in AUDIO):
        if spec.only and not any(fnmatch.fnmatchcase(path.name, pattern) for pattern in spec.only):
            continue
        facts = spec.facts(path)
        if spec.only == ("*.opus",) and not facts:  # not a track of an album (warzone's menu.opus)
            continue
        audio = mutagen.File(path, easy=True)
        tags = dict(audio.tags or {}) if audio is not None else {}
        stanza = stanza_for(stanzas, spec.prefix + path.name) if stanzas else None
        if stanza is not None:
            holder = facts.get("holder") or stanza.copyright
            licence = spec.licence_names.get(stanza.licence, stanza.licence)
        else:  # not machine-readable: one licence for the whole package (checked below)
            holder = re.search(r"Copyright \(C\) ([^\n]+)", text).group(1).strip()
            licence = CC_BY_SA_3 if "Attribution-ShareAlike" in text and "3.0" in text else ""
        if not licence:
            raise SystemExit(f"demo_manifest: no licence found for {path} in {copyright_file}")
        artist = facts.get("artist") or tag(tags, "artist") or spec.team or re.sub(r"\s*\(.*?\)", "", holder).strip()
        title = facts.get("title") or tag(tags, "title", path) or _title(path)
        attribution = (
            f"{title} by {artist}, from {spec.project} ({spec.homepage}); Copyright {holder}. "
            f"Licence: {licence}. Debian package {package} {version}; see {copyright_file}."
        )
        out.append(
            {"path": str(path), "title": title, "artist": artist}
            | {"album": facts.get("album") or tag(tags, "album") or spec.project}
            | {"license": attribution}
        )
    return out


def _title(path: Path) -> str:
    """A title from a file name: "lostrace-ks.ogg" -> "Lostrace", "hr3-desert.ogg" -> "Desert"."""
    stem = path.stem
    if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", stem) and len(stem.split("-")[-1]) <= 2:
        stem = stem.rsplit("-", 1)[0]  # a composer's initials (Extreme Tux Racer: "-ks", "-jt")
    return stem.split("-")[-1].replace("_", " ").title()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in PACKAGES:
        print(f"usage: demo_manifest.py {{{','.join(PACKAGES)}}} OUT.csv", file=sys.stderr)
        return 2
    package, out = argv
    if not PACKAGES[package].music_dir.is_dir():
        print(f"demo_manifest: {PACKAGES[package].music_dir} not found: apt-get install {package}", file=sys.stderr)
        return 1
    table = rows(package)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "title", "artist", "album", "license"])
        writer.writeheader()
        writer.writerows(table)
    print(f"demo_manifest: {package}: {len(table)} tracks -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
