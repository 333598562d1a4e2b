"""One text policy for POST /tracks and `photoscore index` (issue 14, F4, F5, F9 titles).

The indexer runs for real (tiny real checkpoint, real audio, SQLite and PostgreSQL) on a
manifest whose titles carry RTL overrides, ESC, BEL, NUL, invisible-only text and a 30,000
character licence, plus one row whose path has a 300-byte component.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.core.db import make_engine, make_session_factory
from app.core.models import Track
from app.core.text import MAX_LICENSE_CHARS, MAX_TITLE_CHARS, clean_field, clean_text
from indexer.cli import add_arguments, run_index
from tests.support.songs import real_music, write_track

HOSTILE = "a\u202egnp.wav\x1b[31m\x07b\x00c"


def test_clean_text_policy() -> None:
    assert clean_text(HOSTILE) == "agnp.wav[31mbc"
    assert clean_text("  Cafe\u0301 \t del\u2028Mar\x85 ") == "Café del Mar"  # NFC, whitespace collapsed
    assert clean_text("\u200b\u200d\ufeff\u2060\u3164") is None  # invisible only: absent
    assert clean_text(" \x00\x1b ") is None
    assert clean_text("\u2067x\u2069") == "x"
    assert clean_text("x" * 5000) == "x" * MAX_TITLE_CHARS
    assert clean_field("license", "y" * 30_000) == "y" * MAX_LICENSE_CHARS
    assert clean_text("a\u200bb") == "a\u200bb"  # a zero-width space inside visible text stays


def _index(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run_index(parser.parse_args([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


def _tracks(url: str) -> dict[str, Track]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s:
            return {Path(t.source).name: t for t in s.scalars(select(Track))}
    finally:
        engine.dispose()


def test_indexer_cleans_manifest_text_and_rejects_unusable_paths(
    db_url: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lib = tmp_path / "lib"
    for i, name in enumerate(("nul.wav", "invisible.wav", "\u202eevil\x1b.wav")):
        write_track(lib / name, real_music(4.0, i), tags=None)
    long_name = "x" * 300 + ".wav"  # one component over 255 bytes: ENAMETOOLONG
    manifest = tmp_path / "tracks.csv"
    rows = [
        "path,title,artist,album,license",
        f'lib/nul.wav,"{HOSTILE}",Band\x00X,,"{"L" * 30_000}"',
        "lib/invisible.wav,\u200b\u200b\u200d,,,",
        f"lib/{long_name},Too long,,,",
        "lib/\u202eevil\x1b.wav,,,,",
    ]
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["--database-url", db_url, "--index-dir", tmp_path / "index", "--checkpoint", tiny_checkpoint]
    code, out, err = _index(capsys, manifest, *args, "--workers", "1")
    assert code == 0, err
    assert "Traceback" not in out + err and "INSERT" not in out + err, out + err
    assert "tracks added    3" in out, out
    failed = [line for line in out.splitlines() if long_name in line]
    assert len(failed) == 1 and "unusable path" in failed[0] and "File name too long" in failed[0], out
    tracks = _tracks(db_url)
    nul = tracks["nul.wav"]
    assert nul.title == "agnp.wav[31mbc" and nul.artist == "BandX"
    assert nul.license == "L" * MAX_LICENSE_CHARS
    assert tracks["invisible.wav"].title == "invisible"  # invisible-only title: the file name, as if absent
    assert tracks["\u202eevil\x1b.wav"].title == "evil"  # a title from the file name is cleaned too
