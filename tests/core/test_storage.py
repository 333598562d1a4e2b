"""The content-addressed audio store and its crash sweeps, on a real catalogue (SQLite, PostgreSQL).

An upload cut off between storing its file and committing its track leaves an unreferenced file;
the service removes such files at start-up once they are an hour old, and never a file a track
points at or an upload in flight may be about to.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.catalogue import referenced_audio_keys
from app.core.storage import AudioStore
from tests.support.catalogue import add
from tests.support.media import wav_bytes
from tests.support.service import add_song, service_settings
from tests.support.songs import make_songs

HOUR = 3600.0


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = AudioStore(tmp_path)
    data = wav_bytes(1.0)
    key = store.put(data)
    assert key.endswith(".wav") and store.path(key).read_bytes() == data
    assert store.put(data) == key and len(list(tmp_path.rglob("*.wav"))) == 1
    assert store.make_key(b"not audio").endswith(".bin")


def test_sweeps_remove_only_old_temporaries_and_unreferenced_files(tmp_path: Path, session_factory: Any) -> None:
    store = AudioStore(tmp_path / "audio")
    kept, orphan, fresh_orphan, reused = (store.put(wav_bytes(1.0, seed=i)) for i in range(4))
    with session_factory() as s:
        add(s, kept.split(".")[0], n=1, ckpt="ck", audio_key=kept)
    for key in (kept, orphan, reused):
        age(store.path(key), 2 * HOUR)
    old_tmp = store.path(kept).parent / ".tmp-crashed"
    old_tmp.write_bytes(b"half")
    age(old_tmp, 2 * HOUR)
    new_tmp = store.path(kept).parent / ".tmp-writing"
    new_tmp.write_bytes(b"half")
    (store.root / "README").write_text("not a key: never touched")

    # An upload of the same bytes as an old orphan reuses the file; that refreshes its time.
    assert store.put(wav_bytes(1.0, seed=3)) == reused

    def referenced(keys: list[str]) -> set[str]:
        with session_factory() as s:
            return referenced_audio_keys(s, keys)

    assert store.sweep_temporary() == 1
    assert store.sweep_unreferenced(referenced, older_than_s=HOUR, chunk=2) == 1
    assert not old_tmp.exists() and new_tmp.exists() and (store.root / "README").exists()
    assert not store.exists(orphan)
    assert store.exists(kept) and store.exists(fresh_orphan) and store.exists(reused)


def test_service_start_up_removes_an_orphan_left_by_a_cut_off_upload(
    tiny_checkpoint: Path, tmp_path: Path, caplog: Any
) -> None:
    settings = service_settings(tmp_path / "data", tiny_checkpoint, max_audio_seconds=30.0)
    song = make_songs(tmp_path / "songs")[0]
    with TestClient(create_app(settings)) as client:
        r = add_song(client, song)
        assert r.status_code == 201, r.text
    store = AudioStore(settings.resolved_audio_dir)
    stored = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(stored) == 1
    orphan = store.path(store.put(wav_bytes(3.0, seed=7)))  # stored, then the process "died"
    age(orphan, 2 * HOUR)
    age(stored[0], 2 * HOUR)

    with caplog.at_level(logging.WARNING, logger="app.api.main"), TestClient(create_app(settings)) as client:
        assert client.get(f"/tracks/{r.json()['id']}/audio").status_code == 200
    assert not orphan.exists() and stored[0].exists()
    assert "removed 1 stored audio files no track references" in caplog.text
