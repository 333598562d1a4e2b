"""``photoscore index`` end to end on real music, SQLite and PostgreSQL.

Covers: tags/licences, bad files skipped with reasons, idempotent re-runs, ``kill -9`` mid-run
then a re-run (no duplicates, no partial track, DB and index agree clip for clip), ``--rebuild``
giving the same search results, HNSW above the threshold, and checkpoint changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from app.core.db import make_engine
from app.core.models import Track
from app.core.vector_index import ClipIndex, IndexMismatchError
from tests.support import REPO
from tests.support.indexing import assert_consistent, file_hash, group_exits, index
from tests.support.songs import real_music, write_track


def test_index_end_to_end_then_rerun_and_rebuild(
    db_url: str,
    music_library: Path,
    bad_files: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index_dir = tmp_path / "index"
    common = ["--database-url", db_url, "--index-dir", index_dir, "--checkpoint", tiny_checkpoint]
    code, out, err = index(capsys, music_library, bad_files, *common, "--workers", "2")
    assert code == 0, err
    assert "tracks added    5" in out and "tracks failed   5" in out
    reasons = {
        line.split(": ", 1)[0].strip(): line.split(": ", 1)[1]
        for line in out.splitlines()
        if line.startswith(f"  {bad_files}")
    }
    assert reasons[str(bad_files / "empty.wav")].startswith("empty file")
    assert "silent" in reasons[str(bad_files / "silent.wav")]
    assert "too short (0.50 s" in reasons[str(bad_files / "short.wav")]
    assert "corrupt" in reasons[str(bad_files / "random.mp3")]
    assert "corrupt" in reasons[str(bad_files / "text.ogg")]
    assert "x real time" in out and "clips/s" in out and "exact (IndexFlatIP)" in out

    ckpt = file_hash(tiny_checkpoint)
    cat = assert_consistent(db_url, index_dir, ckpt)
    tracks = cat["tracks"]
    assert set(tracks) == {"one.flac", "two.ogg", "three.wav", "four.mp3", "five.m4a"}
    one, three = tracks["one.flac"], tracks["three.wav"]
    assert (one.title, one.artist, one.album) == ("Battle", "Wesnoth", "Core")
    assert one.license.startswith("GPL-2.0") and tracks["two.ogg"].license == one.license
    assert three.title == "three" and three.artist is None and three.license is None
    assert 6.5 < three.duration < 7.5 and three.clip_count == 4  # 0, 2, 4 s + end-aligned tail
    assert all(0.0 <= t.valence <= 1.0 and 0.0 <= t.arousal <= 1.0 for t in tracks.values())
    assert all(t.checkpoint_hash == ckpt for t in tracks.values())

    original = ClipIndex.load(index_dir, expected_checkpoint_hash=ckpt)
    queries = cat["embs"][::3]
    before = original.search(queries, 10)
    assert (before[1][:, 0] == cat["ids"][::3]).all()  # every clip finds itself first

    for _ in range(2):  # re-runs find the file current and leave it as it is
        code, out, _ = index(capsys, music_library, *common, "--workers", "0")
        assert code == 0 and "tracks added    0" in out and "(5 already indexed)" in out
        assert "unchanged" in out
    assert_consistent(db_url, index_dir, ckpt)

    code, out, _ = index(capsys, "--rebuild", *common)
    assert code == 0 and "built" in out and "requested (--rebuild)" in out
    rebuilt = ClipIndex.load(index_dir, expected_checkpoint_hash=ckpt)
    after = rebuilt.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    with pytest.raises(IndexMismatchError, match="--rebuild"):
        ClipIndex.load(index_dir, expected_checkpoint_hash="0" * 64)


def test_manifest_license_copy_audio_and_hnsw(
    sqlite_url: str,
    music_library: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHOTOSCORE_AUDIO_DIR", str(tmp_path / "audio"))
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,title,artist,album,license\n"
        f"{music_library / 'three.wav'},Night Watch,The Band,Live,CC-BY-4.0 The Band\n"
        f"{os.path.relpath(music_library / 'four.mp3', tmp_path)},,,,\n"
        "missing.ogg,Nothing,,,\n"
    )
    index_dir = tmp_path / "index"
    code, out, err = index(
        capsys,
        manifest,
        "--database-url",
        sqlite_url,
        "--index-dir",
        index_dir,
        "--checkpoint",
        tiny_checkpoint,
        "--workers",
        "0",
        "--license",
        "Debian package: x",
        "--exact-threshold",
        "5",
        "--no-progress",
        "--copy-audio",
        "--hop",
        "1",
    )
    assert code == 0, err
    assert "tracks added    2" in out and "missing.ogg: file not found" in out
    assert "HNSW (IndexHNSWFlat)" in out and "recall@10 vs exact" in out
    assert "'M': 32" in out and "'efConstruction': 80" in out and "'efSearch'" in out
    cat = assert_consistent(sqlite_url, index_dir, file_hash(tiny_checkpoint))
    three, four = cat["tracks"]["three.wav"], cat["tracks"]["four.mp3"]
    assert (three.title, three.artist, three.album) == ("Night Watch", "The Band", "Live")
    assert three.license == "CC-BY-4.0 The Band"  # the manifest wins over --license
    assert three.clip_count == 6  # 7 s at a 1 s hop: clips start at 0..5 s
    assert four.title == "four" and four.license == "Debian package: x"
    from app.core.storage import AudioStore

    stored = AudioStore(tmp_path / "audio").path(three.audio_key)
    assert three.audio_key == f"{three.sha256}.wav"
    assert stored.read_bytes() == (music_library / "three.wav").read_bytes()
    meta = ClipIndex.read_meta(index_dir)  # the sidecar is the index's one description
    assert meta.index_type == "hnsw" and meta.params["M"] == 32 and meta.count == len(cat["ids"])
    assert meta.recall_at_10 is not None and 0.0 <= meta.recall_at_10 <= 1.0


def test_bad_arguments_fail_with_one_line(
    sqlite_url: str,
    music_library: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = [
        ([tmp_path / "nope", "--database-url", sqlite_url], "no such file or folder"),
        ([music_library, "--database-url", "postgresql+psycopg://u@127.0.0.1:1/x"], "cannot reach database"),
        (
            [music_library, "--database-url", sqlite_url, "--checkpoint", tmp_path / "x.safetensors"],
            "checkpoint not found",
        ),
        (["--database-url", sqlite_url], "give at least one PATH_OR_MANIFEST"),
    ]
    for argv, message in cases:
        if "--checkpoint" not in argv:
            argv = [*argv, "--checkpoint", tiny_checkpoint]
        code, out, err = index(capsys, *argv, "--index-dir", tmp_path / "index")
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and message in err, err


def test_other_checkpoint_is_reported_then_reembedded(
    sqlite_url: str,
    music_library: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.export import export_onnx

    model, meta = load_checkpoint(tiny_checkpoint)
    meta.name = "tiny-retrained"
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, model, meta)
    export_onnx(other)
    files = [music_library / "three.wav", music_library / "four.mp3"]
    base = ["--database-url", sqlite_url, "--index-dir", tmp_path / "index", "--workers", "0"]
    assert index(capsys, *files, *base, "--checkpoint", tiny_checkpoint)[0] == 0
    code, out, _ = index(capsys, files[0], *base, "--checkpoint", other)
    assert code == 0 and "with another checkpoint" in out and "--reembed" in out
    assert "2 catalogue tracks were embedded by another checkpoint" in out
    assert "checkpoint changed" in out
    code, out, _ = index(capsys, files[0], *base, "--checkpoint", other, "--reembed")
    assert code == 0 and "tracks added    1 (1 re-embedded)" in out
    assert "1 catalogue tracks were embedded by another checkpoint" in out
    cat = assert_consistent(sqlite_url, tmp_path / "index", file_hash(other))
    assert {n: t.checkpoint_hash == file_hash(other) for n, t in cat["tracks"].items()} == {
        "three.wav": True,
        "four.mp3": False,
    }


@pytest.fixture(scope="module")
def eight_tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eight")
    for i in range(8):
        write_track(root / f"track{i}.wav", real_music(10.0, i + 3))
    return root


def test_kill_9_mid_run_then_rerun(
    db_url: str,
    eight_tracks: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index_dir = tmp_path / "index"
    common = ["--database-url", db_url, "--index-dir", index_dir, "--checkpoint", tiny_checkpoint]
    # An earlier complete run leaves an index that the killed run makes stale.
    first = sorted(eight_tracks.iterdir())[:2]
    assert index(capsys, *first, *common, "--workers", "0")[0] == 0

    engine = make_engine(db_url)
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", eight_tracks, *common, "--workers", "1", "--no-progress"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,  # its worker processes share its group, for cleanup
    )
    committed = 2
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as conn:
                committed = conn.execute(select(func.count()).select_from(Track)).scalar_one()
            if committed > 2:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
        assert group_exits(proc.pid, within_s=15), "decode workers outlived the killed indexer"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned decode workers
        engine.dispose()
    assert 2 < committed < 8, f"the kill did not land mid-run ({committed} tracks committed)"

    code, out, err = index(capsys, eight_tracks, *common, "--workers", "0")
    assert code == 0, err
    added = int(out.split("tracks added")[1].split()[0])
    assert added == 8 - committed or added == 8 - committed - 1  # one may commit after we looked
    assert "(" in out and "already indexed" in out and "updated" in out
    cat = assert_consistent(db_url, index_dir, file_hash(tiny_checkpoint))
    assert len(cat["tracks"]) == 8


def test_progress_file_counts_every_track_and_resumes(
    db_url: str,
    eight_tracks: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The status file the service shows: written while the run goes (seen mid-run by a reader
    polling it), "interrupted" after TERM (Ctrl+C in the quickstart), and a re-run counts the tracks already indexed."""
    import json

    from app.core.progress import read_progress

    status = tmp_path / "status" / "indexing.json"
    common = ["--database-url", db_url, "--index-dir", tmp_path / "index", "--checkpoint", tiny_checkpoint]
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", eight_tracks, *common, "--workers", "0", "--no-progress"]
        + ["--progress-file", str(status), "--progress-label", "the test library"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and (not seen or seen[-1] < 3):
            progress = read_progress(status)
            if progress is not None and progress.running:
                assert progress.total == 8 and progress.pid == proc.pid and progress.label == "the test library"
                seen.append(progress.done)
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)  # what the quickstart sends the indexer on Ctrl+C
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert seen and seen[0] < seen[-1] and 3 <= seen[-1] < 8, seen  # it moved while running
    stopped = read_progress(status)
    assert stopped is not None and stopped.state == "interrupted" and stopped.finished is not None
    assert 3 <= stopped.done < 8 and "run it again to resume" in stopped.describe()

    code, out, err = index(capsys, eight_tracks, *common, "--workers", "0", "--progress-file", status)
    assert code == 0, err
    raw = json.loads(status.read_text())
    assert raw["state"] == "done" and raw["done"] == raw["total"] == 8 and raw["failed"] == 0
    assert raw["label"] == "the library" and raw["current"].startswith("track")
    # The TERM may land between a track's commit and the progress write that counts it.
    assert any(f"({n} already indexed)" in out for n in (stopped.done, stopped.done + 1)), out
    assert not list(status.parent.glob(".*.tmp"))  # replaced atomically, nothing left behind


def test_progress_file_defaults_to_the_data_dir_and_a_dead_run_is_stale(
    db_url: str,
    eight_tracks: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --progress-file the run reports where the service looks; a run killed with no
    chance to say so (kill -9) is reported stale, not running for ever."""
    from dataclasses import replace

    from app.core.progress import default_path, read_progress, write_progress

    monkeypatch.setenv("PHOTOSCORE_DATA_DIR", str(tmp_path / "data"))
    one = sorted(eight_tracks.iterdir())[0]
    code, _, err = index(
        capsys, one, "--database-url", db_url, "--index-dir", tmp_path / "i", "--checkpoint", tiny_checkpoint
    )
    assert code == 0, err
    path = default_path(tmp_path / "data")
    done = read_progress(path)
    assert done is not None and (done.state, done.done, done.total) == ("done", 1, 1)
    assert done.describe() == "indexed the library: 1 of 1 songs"

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_progress(path, replace(done, state="running", finished=None, pid=int(dead.stdout)))
    stale = read_progress(path)
    assert stale is not None and stale.state == "stale"
    write_progress(path, replace(done, state="running", finished=None))  # this process: alive
    assert read_progress(path).running  # type: ignore[union-attr]
    path.write_text("{not json")
    assert read_progress(path) is None

    code, _, _ = index(
        capsys,
        one,
        "--database-url",
        db_url,
        "--index-dir",
        tmp_path / "i",
        "--checkpoint",
        tiny_checkpoint,
        "--progress-file",
        "none",
    )
    assert code == 0 and path.read_text() == "{not json"
