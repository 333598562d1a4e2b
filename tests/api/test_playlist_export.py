"""Playlists to take away (issue 26, part 3): M3U8, XSPF and the JSON cue sheet.

The exports come from a real server (`photoscore serve`, real songs, the tiny checkpoint) and
are read by real parsers: VLC, a real player, opens the M3U8 and the XSPF over HTTP and says in
its log where each song starts; Python's XML parser reads the XSPF, held to the structure that
XSPF 1's schema requires; the cue sheet is validated against the service's published OpenAPI
schema with `jsonschema`. The pure writers are also fed hostile text (line breaks, control
characters) that must not add a line to an M3U8 or break the XML.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest

from app.services.playlist_export import META_END, META_START, VLC_APPLICATION, Cue, Plan, cue_sheet, m3u8, xspf
from tests.support.media import photo_bytes
from tests.support.servers import LiveServer

X = "{http://xspf.org/ns/0/}"
VLC = "{http://www.videolan.org/vlc/playlist/ns/0/}"
CVLC = shutil.which("cvlc")
NOBODY = 65534  # VLC refuses to run as root; CI runs as root

# XSPF 1 (xspf.org/xspf-v1.html and its XML Schema): the children a <track> may have, in order,
# and which of them may appear at most once.
TRACK_CHILDREN = [
    "location", "identifier", "title", "creator", "annotation", "info", "image", "album",
    "trackNum", "duration", "link", "meta", "extension",
]  # fmt: skip
TRACK_SINGLE = {"title", "creator", "annotation", "info", "image", "album", "trackNum", "duration"}
PLAYLIST_CHILDREN = [
    "title", "creator", "annotation", "info", "location", "identifier", "image", "date",
    "license", "attribution", "link", "meta", "extension", "trackList",
]  # fmt: skip


def _plan_json(server: LiveServer, count: int = 3, segment: int = 4, **params: str) -> httpx.Response:
    kinds = ["warm", "cold", "green", "warm"]
    files = [("images", (f"{i}-{kinds[i]}.jpg", photo_bytes(kinds[i]), "image/jpeg")) for i in range(count)]
    return httpx.post(server.url + "/playlist", params={"segment_seconds": segment, **params}, files=files, timeout=120)


@pytest.fixture(scope="module")
def planned(live_server: LiveServer) -> dict:
    r = _plan_json(live_server)
    assert r.status_code == 200, r.text
    return r.json()


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def assert_xspf_structure(text: str) -> ET.Element:
    """Parse with the XML parser and hold the document to XSPF 1's required structure."""
    root = ET.fromstring(text.encode())
    assert root.tag == f"{X}playlist" and root.get("version") == "1"
    kids = [_local(c.tag) for c in root if c.tag.startswith(X)]
    assert kids.count("trackList") == 1, kids
    assert kids == sorted(kids, key=PLAYLIST_CHILDREN.index), kids
    for track in root.find(f"{X}trackList") or []:
        assert track.tag == f"{X}track"
        names = [_local(c.tag) for c in track]
        assert all(c.tag.startswith(X) for c in track), names  # foreign elements only inside <extension>
        assert names == sorted(names, key=TRACK_CHILDREN.index), names
        assert all(names.count(n) <= 1 for n in TRACK_SINGLE), names
        for child in track:
            name, value = _local(child.tag), (child.text or "")
            if name in ("trackNum", "duration"):  # xsd:nonNegativeInteger (trackNum: positive)
                assert re.fullmatch(r"\d+", value) and (name == "duration" or int(value) > 0), (name, value)
            if name == "location":
                assert urlsplit(value).scheme in ("http", "https"), value
            if name == "meta":
                assert urlsplit(child.get("rel", "")).scheme, child.attrib  # rel: a URI
            if name == "extension":
                assert urlsplit(child.get("application", "")).scheme, child.attrib
    return root


# ------------------------------------------------------------------------------ pure writers
HOSTILE = Plan(
    cues=[
        Cue(
            index=0,
            photo="beach\n#EXTVLCOPT:start-time=999.jpg",
            photo_valence=0.6,
            photo_arousal=0.4,
            track_id=7,
            title="Line\r\nbreak\x00 & <tag>",
            artist="A\x1b[31m",
            album="Album \ufffe",
            license="CC BY 4.0",
            location="http://host/tracks/7/audio",
            track_duration=120.0,
            start=24.0,
            end=34.5,
            score=0.8,
            why={"summary": "close"},
            summary="close",
        ),
        Cue(1, None, 0.2, 0.9, 8, "No audio", None, None, None, None, 60.0, 0.0, 10.0, 0.5),
    ],
    title="Trip\n#EXTM3U",
)


def test_m3u8_writer_keeps_one_entry_per_song_whatever_the_titles_hold():
    text = m3u8(HOSTILE)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and text.endswith("\n")
    assert all(not re.search(r"[\x00-\x1f]", line) for line in lines)
    assert [line for line in lines if line.startswith("#EXTVLCOPT")] == [
        "#EXTVLCOPT:start-time=24",
        "#EXTVLCOPT:stop-time=34.5",
    ]
    assert [line for line in lines if not line.startswith("#")] == ["http://host/tracks/7/audio"]
    assert lines.count("#EXTM3U") == 1 and lines[1] == "#PLAYLIST:Trip #EXTM3U"
    assert lines[2] == "#EXTINF:10,A [31m - Line break  & <tag>"  # control runs become one space
    assert lines[-2:] == ["#EXTINF:10,No audio", "# photo 2: no audio stored for track 8"]


def test_xspf_writer_output_is_well_formed_and_follows_the_schema():
    root = assert_xspf_structure(xspf(HOSTILE))
    first, second = root.find(f"{X}trackList")
    assert first.findtext(f"{X}title") == "Line break  & <tag>"
    assert first.findtext(f"{X}duration") == "10500"
    assert {m.get("rel"): m.text for m in first.findall(f"{X}meta")} == {META_START: "24", META_END: "34.5"}
    ext = first.find(f"{X}extension")
    assert ext.get("application") == VLC_APPLICATION
    assert [o.text for o in ext.findall(f"{VLC}option")] == ["start-time=24", "stop-time=34.5"]
    assert second.find(f"{X}location") is None and second.find(f"{X}extension/{VLC}option") is None


def test_cue_sheet_lays_the_segments_back_to_back():
    sheet = cue_sheet(HOSTILE)
    assert [c["timeline"] for c in sheet["cues"]] == [{"start": 0.0, "end": 10.5}, {"start": 10.5, "end": 20.5}]
    assert sheet["total_duration"] == 20.5 and sheet["cues"][0]["segment"] == {"start": 24.0, "end": 34.5}


# ----------------------------------------------------------------------------------- the API
def test_json_answer_is_unchanged_and_each_format_downloads(live_server, planned):
    assert set(planned) == {"entries", "total_duration", "total_score", "model_version", "took_ms"}
    spec = httpx.get(live_server.url + "/openapi.json", timeout=30).json()
    documented = spec["paths"]["/playlist"]["post"]["responses"]["200"]["content"]
    expected = {
        "m3u8": ("audio/mpegurl", "photoscore-album.m3u8"),
        "xspf": ("application/xspf+xml", "photoscore-album.xspf"),
        "cue": ("application/vnd.photoscore.cue-sheet+json", "photoscore-album.cue.json"),
    }
    for fmt, (media_type, filename) in expected.items():
        r = _plan_json(live_server, format=fmt, title="Brittany")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].split(";")[0] == media_type and media_type in documented
        assert r.headers["content-disposition"] == f'attachment; filename="{filename}"'
        # The same photos give the same plan: the file says what the JSON said.
        converted = httpx.post(
            live_server.url + "/playlist/export", params={"format": fmt, "title": "Brittany"}, json=planned, timeout=60
        )
        assert converted.status_code == 200, converted.text
        assert converted.content == r.content
    sheet = converted.json()
    schema = {**spec["components"]["schemas"]["CueSheet"], "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(sheet)
    assert sheet["title"] == "Brittany"
    for cue, entry in zip(sheet["cues"], planned["entries"], strict=True):
        assert cue["photo"]["filename"] == entry["filename"] and cue["song"]["id"] == entry["track"]["id"]
        assert cue["segment"] == entry["segment"] and cue["why"] == entry["why"]
        assert cue["song"]["url"] == live_server.url + entry["track"]["audio_url"]
        assert cue["song"]["license"] == entry["track"]["license"]


def test_xspf_from_the_service_follows_the_schema(live_server, planned):
    r = httpx.post(live_server.url + "/playlist/export", params={"format": "xspf"}, json=planned, timeout=60)
    root = assert_xspf_structure(r.text)
    tracks = list(root.find(f"{X}trackList"))
    assert len(tracks) == len(planned["entries"])
    for track, entry in zip(tracks, planned["entries"], strict=True):
        assert track.findtext(f"{X}location") == live_server.url + entry["track"]["audio_url"]
        assert track.findtext(f"{X}title") == entry["track"]["title"]
        assert track.findtext(f"{X}creator") == entry["track"]["artist"]
        meta = {m.get("rel"): float(m.text) for m in track.findall(f"{X}meta")}
        assert meta == {META_START: entry["segment"]["start"], META_END: entry["segment"]["end"]}


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("format=mp3", "query parameter 'format'"),
        ("audio_url", "is not a path on this service"),
        ("segment", "is before start"),
        ("huge", "must be finite seconds"),
        ("empty", "entries: 0 sent"),
        ("title", "query parameter 'title'"),
    ],
)
def test_bad_exports_are_refused_with_a_message(live_server, planned, how, fragment):
    body = json.loads(json.dumps(planned))
    params = {"format": "m3u8"}
    if how == "format=mp3":
        params["format"] = "mp3"
    elif how == "audio_url":
        body["entries"][1]["track"]["audio_url"] = "https://elsewhere.example/evil.mp3"
    elif how == "segment":
        body["entries"][0]["segment"] = {"start": 9.0, "end": 3.0}
    elif how == "huge":
        body["entries"][0]["segment"] = {"start": 1e300, "end": 1e308}
    elif how == "empty":
        body["entries"] = []
    else:
        params["title"] = "x" * 201
    r = httpx.post(live_server.url + "/playlist/export", params=params, json=body, timeout=60)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"], r.json()
    if how == "format=mp3":  # the upload endpoint refuses the same, before any photo is looked at
        r = _plan_json(live_server, count=2, format="mp3")
        assert r.status_code == 422 and "format" in r.json()["detail"]


# ------------------------------------------------------------------------------ a real player
class Vlc:
    """`cvlc` with no interface and no audio device, logging verbosely; run as `nobody` when we
    are root (VLC refuses root). Each log line is stamped with when it arrived."""

    def __init__(self) -> None:
        if CVLC is None:
            pytest.fail("the player test needs VLC (apt-get install vlc-bin vlc-plugin-base)")
        self.home = Path(tempfile.mkdtemp(prefix="photoscore-vlc-"))
        self.home.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(self.home, NOBODY, NOBODY)

    def play(self, playlist: str, suffix: str, timeout: float = 90.0) -> list[tuple[float, str]]:
        path = self.home / f"album.{suffix}"
        path.write_text(playlist, encoding="utf-8")
        path.chmod(0o644)
        cmd = [CVLC, "--intf", "dummy", "--aout", "dummy", "--no-video", "-vv", "--play-and-exit", str(path)]
        if os.geteuid() == 0:
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "LANG": "C.UTF-8"}
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        lines: list[tuple[float, str]] = []
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                lines.append((time.monotonic() - started, line.rstrip()))
                if time.monotonic() - started > timeout:
                    break
        finally:
            proc.kill() if proc.poll() is None else None
            proc.wait(10)
        return lines

    def close(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def vlc() -> Iterator[Vlc]:
    player = Vlc()
    yield player
    player.close()


def _opened(lines: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """(when, url) each time VLC opened one of the service's songs for playing."""
    pattern = re.compile(r"main input debug: `(https?://[^']+)' gives access")
    seen: list[tuple[float, str]] = []
    for at, line in lines:
        m = pattern.search(line)
        if m and "/tracks/" in m.group(1) and (not seen or seen[-1][1] != m.group(1)):
            seen.append((at, m.group(1)))
    return seen


@pytest.mark.parametrize("fmt", ["m3u8", "xspf"])
def test_vlc_plays_each_song_from_its_best_moment(live_server, vlc, fmt):
    plan = _plan_json(live_server, count=3, segment=2).json()
    starts = [e["segment"]["start"] for e in plan["entries"]]
    urls = [live_server.url + e["track"]["audio_url"] for e in plan["entries"]]
    exported = httpx.post(live_server.url + "/playlist/export", params={"format": fmt}, json=plan, timeout=60)
    assert exported.status_code == 200, exported.text
    lines = vlc.play(exported.text, fmt)
    log = "\n".join(line for _, line in lines)
    opened = _opened(lines)
    assert [u for _, u in opened] == urls, log[-4000:]
    # VLC's input says where it starts each song ("starting at time: 24s", whole seconds; it says
    # nothing for 0), in the playlist's order.
    said = [int(m) for m in re.findall(r"main input debug: starting at time: (\d+)s", log)]
    assert said == [int(s) for s in starts if int(s) > 0], (said, starts)
    assert any(s >= 1 for s in starts), f"every segment starts at 0 s; the test would prove nothing: {starts}"
    # It took each song's stop option too (VLC warns when it ignores one), and went to the end.
    assert "invalid stop-time ignored" not in log and "invalid start-time" not in log
    assert "end of playlist, exiting" in log
