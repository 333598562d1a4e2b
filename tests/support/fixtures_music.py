"""Fixtures: music libraries for the indexer, good and bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.songs import SR, real_music, write_track


@pytest.fixture(scope="session")
def music_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five short real-music tracks in five formats, some tagged, one with a LICENSE file."""
    root = tmp_path_factory.mktemp("library")
    specs = [
        ("album/one.flac", {"title": "Battle", "artist": "Wesnoth", "album": "Core"}),
        ("album/two.ogg", {"title": "Elvish", "artist": "Wesnoth"}),
        ("three.wav", None),
        ("four.mp3", None),
        ("five.m4a", None),
    ]
    for i, (rel, tags) in enumerate(specs):
        write_track(root / rel, real_music(7.0, i), tags=tags)
    (root / "album" / "LICENSE").write_text("GPL-2.0-or-later, from the Wesnoth project")
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the indexer must skip with a reason, never abort on."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.wav").write_bytes(b"")
    (root / "random.mp3").write_bytes(np.random.default_rng(0).bytes(20_000))
    sf.write(root / "silent.wav", np.zeros(5 * SR, np.float32), SR)
    sf.write(root / "short.wav", real_music(0.5, 1), SR)
    (root / "text.ogg").write_text("this is a text file, not Ogg Vorbis\n" * 50)
    return root
