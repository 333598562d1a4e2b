"""A planned album playlist as files other programs read: M3U8, XSPF and a JSON cue sheet.

Pure functions over a `Plan` (no web framework, no I/O), so the HTTP shell, the page and the
tests share one writer per format. Every format keeps what a player or a video editor needs:
where the song is (an absolute URL), its title and artist, and the best-matching segment to
play. Players learn the segment's start and stop from VLC's per-entry options
(`#EXTVLCOPT:start-time=` in M3U8, `<vlc:option>` in XSPF), the de-facto standard that VLC and
the players following it apply; the cue sheet carries everything, including why each song fits.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

ExportFormat = Literal["m3u8", "xspf", "cue"]

XSPF_NS: Final = "http://xspf.org/ns/0/"
VLC_NS: Final = "http://www.videolan.org/vlc/playlist/ns/0/"
VLC_APPLICATION: Final = "http://www.videolan.org/vlc/playlist/0"
META_START: Final = "urn:photoscore:segment-start"  # XSPF <meta rel>: seconds into the song
META_END: Final = "urn:photoscore:segment-end"
CUE_SHEET_FORMAT: Final = "photoscore-cue-sheet"
CUE_SHEET_VERSION: Final = 1


@dataclass(frozen=True)
class Format:
    """How one export travels: its media type and the file name extension a download gets."""

    media_type: str
    extension: str


FORMATS: Final[Mapping[ExportFormat, Format]] = {
    "m3u8": Format("audio/mpegurl", "m3u8"),  # RFC 8216's registered type; UTF-8 by definition
    "xspf": Format("application/xspf+xml", "xspf"),
    "cue": Format("application/vnd.photoscore.cue-sheet+json", "cue.json"),
}


@dataclass(frozen=True)
class Cue:
    """One photo of the album and the stretch of song it gets."""

    index: int  # the photo's position in the album (0-based)
    photo: str | None  # the photo's file name as uploaded
    photo_valence: float
    photo_arousal: float
    track_id: int
    title: str
    artist: str | None
    album: str | None
    license: str | None
    location: str | None  # absolute URL of the song's audio; None when the service stores none
    track_duration: float  # seconds, the whole song
    start: float  # the segment, seconds into the song
    end: float
    score: float
    why: Mapping[str, Any] = field(default_factory=dict)  # as POST /playlist reports it
    summary: str = ""
    timeline: tuple[float, float] | None = None  # where it plays (a video's scene); None: back to back

    @property
    def length(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class Plan:
    """A whole playlist: its cues in play order and what produced it."""

    cues: list[Cue]
    title: str = "PhotoScore album"
    model_version: str = ""
    total_score: float = 0.0


# Line breaks and control characters (one M3U line must not become two), and what XML 1.0
# cannot carry at all (lone surrogates, U+FFFE/U+FFFF).
_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]+")


def _one_line(text: str) -> str:
    """Text safe for one M3U line or one XML text node."""
    return _UNSAFE.sub(" ", text).strip()


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _display(cue: Cue) -> str:
    return f"{cue.artist} - {cue.title}" if cue.artist else cue.title


def m3u8(plan: Plan) -> str:
    """Extended M3U in UTF-8: per song `#EXTINF` (segment seconds, "artist - title"), VLC's
    `start-time`/`stop-time` options, then the URL. A song without stored audio stays as a
    comment so the numbering of the album still reads."""
    lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(plan.title)}"]
    for cue in plan.cues:
        lines.append(f"#EXTINF:{round(cue.length)},{_one_line(_display(cue))}")
        if cue.location is None:
            lines.append(f"# photo {cue.index + 1}: no audio stored for track {cue.track_id}")
            continue
        lines.append(f"#EXTVLCOPT:start-time={_seconds(cue.start)}")
        lines.append(f"#EXTVLCOPT:stop-time={_seconds(cue.end)}")
        lines.append(_one_line(cue.location))
    return "\n".join(lines) + "\n"


def _photo_label(cue: Cue) -> str:
    return f"photo {cue.index + 1}" + (f" ({cue.photo})" if cue.photo else "")


def xspf(plan: Plan) -> str:
    """XSPF 1: standard `location`, `title`, `creator`, `album`, `annotation`, `trackNum`,
    `duration` (the segment's, in ms); the segment as `meta` (seconds) and as VLC options in an
    `extension`, which VLC applies when it plays the list."""
    ET.register_namespace("", XSPF_NS)
    ET.register_namespace("vlc", VLC_NS)
    x, v = f"{{{XSPF_NS}}}", f"{{{VLC_NS}}}"
    root = ET.Element(f"{x}playlist", {"version": "1"})
    ET.SubElement(root, f"{x}title").text = _one_line(plan.title)
    ET.SubElement(root, f"{x}creator").text = "PhotoScore"
    if plan.model_version:
        ET.SubElement(root, f"{x}annotation").text = _one_line(f"Planned by {plan.model_version}")
    tracks = ET.SubElement(root, f"{x}trackList")
    for n, cue in enumerate(plan.cues):
        track = ET.SubElement(tracks, f"{x}track")
        if cue.location is not None:
            ET.SubElement(track, f"{x}location").text = _one_line(cue.location)
        ET.SubElement(track, f"{x}title").text = _one_line(cue.title)
        if cue.artist:
            ET.SubElement(track, f"{x}creator").text = _one_line(cue.artist)
        note = f"{_photo_label(cue)}: {cue.summary}" if cue.summary else _photo_label(cue)
        licence = f" · Licence: {cue.license}" if cue.license else ""
        ET.SubElement(track, f"{x}annotation").text = _one_line(note + licence)
        if cue.album:
            ET.SubElement(track, f"{x}album").text = _one_line(cue.album)
        ET.SubElement(track, f"{x}trackNum").text = str(cue.index + 1)
        ET.SubElement(track, f"{x}duration").text = str(round(cue.length * 1000))
        ET.SubElement(track, f"{x}meta", {"rel": META_START}).text = _seconds(cue.start)
        ET.SubElement(track, f"{x}meta", {"rel": META_END}).text = _seconds(cue.end)
        ext = ET.SubElement(track, f"{x}extension", {"application": VLC_APPLICATION})
        ET.SubElement(ext, f"{v}id").text = str(n)
        if cue.location is not None:
            ET.SubElement(ext, f"{v}option").text = f"start-time={_seconds(cue.start)}"
            ET.SubElement(ext, f"{v}option").text = f"stop-time={_seconds(cue.end)}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def cue_sheet(plan: Plan) -> dict[str, Any]:
    """Photo -> song, the segment in the song, where it falls on the album's timeline (the
    segments back to back, as the page plays them, or a video scene's own times) and why: what
    a video editor lays out."""
    cues = []
    at = 0.0
    end = 0.0
    for cue in plan.cues:
        start, stop = cue.timeline if cue.timeline is not None else (round(at, 3), round(at + cue.length, 3))
        cues.append(
            {
                "index": cue.index,
                "photo": {"filename": cue.photo, "valence": cue.photo_valence, "arousal": cue.photo_arousal},
                "song": {
                    "id": cue.track_id,
                    "title": cue.title,
                    "artist": cue.artist,
                    "album": cue.album,
                    "license": cue.license,
                    "url": cue.location,
                    "duration": cue.track_duration,
                },
                "segment": {"start": cue.start, "end": cue.end},
                "timeline": {"start": start, "end": stop},
                "score": cue.score,
                "why": dict(cue.why),
            }
        )
        at += cue.length
        end = max(end, stop)
    return {
        "format": CUE_SHEET_FORMAT,
        "version": CUE_SHEET_VERSION,
        "title": plan.title,
        "model_version": plan.model_version,
        "total_duration": round(end, 3),
        "total_score": plan.total_score,
        "cues": cues,
    }


def render(plan: Plan, fmt: ExportFormat) -> str:
    """The plan as the text of one format."""
    if fmt == "m3u8":
        return m3u8(plan)
    if fmt == "xspf":
        return xspf(plan)
    return json.dumps(cue_sheet(plan), ensure_ascii=False, indent=2) + "\n"
