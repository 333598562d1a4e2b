"""Faults: `kill -9` of the server during POST /tracks and of the indexer mid-run, then restart;
a private PostgreSQL stopped (immediate shutdown, i.e. a crash) under load, then started again.

After every fault: no partial track (clip rows == clip_count > 0), no duplicate content, no lost
track (every 201 is still there, same id), database and index agree clip for clip, and the
service recovers by itself. PostgreSQL cases use a fresh database on the shared cluster (created
and dropped here; an unreachable server fails the test) or a private cluster of their own; the
machine's shared cluster is never stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import API_KEY, REPO
from tests.support.audit import audit_catalogue, sha256_of
from tests.support.databases import PrivatePostgres, session_factory_for
from tests.support.load import drive, labelled
from tests.support.media import photo_bytes
from tests.support.servers import STARTUP_TIMEOUT_S, Server, api_keys_env, launch_server, server_group, wait_ready
from tests.support.songs import Song

AUTH = {"X-API-Key": API_KEY}


def _env(data_dir: Path, checkpoint: Path, database_url: str | None) -> dict[str, str]:
    env = {
        "PHOTOSCORE_DATA_DIR": str(data_dir),
        "PHOTOSCORE_CHECKPOINT": str(checkpoint),
        "PHOTOSCORE_INDEX_SYNC_SECONDS": "0.5",
        "PHOTOSCORE_LOG_LEVEL": "info",
    }
    if database_url:
        env["PHOTOSCORE_DATABASE_URL"] = database_url
    return env


def _started(group: list[Server], log: Path, env: dict[str, str]) -> tuple[Server, float]:
    t0 = time.perf_counter()
    server = launch_server(log, env)
    group.append(server)
    wait_ready(server, timeout=STARTUP_TIMEOUT_S)
    return server, time.perf_counter() - t0


def _served_track_ids(url: str, database_url: str | None = None) -> set[int]:
    """Track ids a photo gets from the server (n=100 covers the catalogue); with
    ``database_url``, every returned segment must be one of that track's clips in the DB."""
    r = httpx.post(
        f"{url}/recommend?n=100&max_per_artist=0&dedupe=false",
        files={"image": ("p.jpg", photo_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    if database_url is not None:
        from sqlalchemy import select

        from app.core.models import Clip

        with session_factory_for(database_url) as factory, factory() as s:
            rows = s.execute(select(Clip.track_id, Clip.start, Clip.end)).all()
        clips = {(t, round(a, 3), round(b, 3)) for t, a, b in rows}
        for x in results:
            segment = (x["track"]["id"], round(x["segment"]["start"], 3), round(x["segment"]["end"], 3))
            assert segment in clips, f"served segment {segment} is not a clip in the database"
    return {x["track"]["id"] for x in results}


# ------------------------------------------------------------------------ kill -9 the server
@dataclass
class Upload:
    song: Song
    data: bytes
    sha: str
    started: bool = False
    status: int | None = None
    track_id: int | None = None
    error: str | None = None


def _upload_until_killed(url: str, uploads: list[Upload], threads: int, kill: Callable[[], None]) -> float:
    """Post every upload from ``threads`` clients; call ``kill`` once 3 have been answered 201,
    at a random moment while the others are in flight. Returns the kill time."""
    queue = iter(uploads)
    lock = threading.Lock()
    dead = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not dead.is_set():
                with lock:
                    up = next(queue, None)
                if up is None:
                    return
                up.started = True
                try:
                    r = c.post("/tracks", files={"audio": (up.song.path.name, up.data, "audio/ogg")}, headers=AUTH)
                    up.status = r.status_code
                    up.track_id = r.json().get("id") if r.status_code in (200, 201) else None
                except httpx.HTTPError as exc:
                    up.error = type(exc).__name__

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while sum(u.status == 201 for u in uploads) < 3:
        assert time.monotonic() < deadline, "the server answered fewer than 3 uploads in time"
        time.sleep(0.01)
    # A random moment, but never after the last answer: on a fast, idle machine the other 11
    # uploads can all finish within the delay. Once every upload has started, kill at once.
    delay_end = time.monotonic() + random.Random(os.getpid()).uniform(0.05, 0.4)
    while True:
        in_flight = sum(u.started and u.status is None and u.error is None for u in uploads)
        unstarted = sum(not u.started for u in uploads)
        if in_flight and (unstarted == 0 or time.monotonic() >= delay_end):
            break
        assert in_flight or unstarted, "every upload was answered before the kill"
        time.sleep(0.001)
    killed_at = time.monotonic()
    kill()
    dead.set()
    for w in workers:
        w.join(90)
    return killed_at


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_server_during_post_tracks(
    backend: str,
    request: pytest.FixtureRequest,
    model_checkpoint: Path,
    song_pool: list[Song],
    tmp_path: Path,
    record: Callable[..., None],
) -> None:
    database_url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    data_dir = tmp_path / "data"
    env = _env(data_dir, model_checkpoint, database_url)
    db = database_url or f"sqlite:///{data_dir / 'photoscore.db'}"
    uploads = [Upload(s, s.path.read_bytes(), sha256_of(s.path.read_bytes())) for s in song_pool[:14]]

    with server_group() as group:
        first, _ = _started(group, tmp_path / "before.log", env)
        in_flight_at_kill: list[int] = []

        def kill() -> None:
            in_flight_at_kill.append(sum(u.started and u.status is None and u.error is None for u in uploads))
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(30)

        _upload_until_killed(first.url, uploads, threads=4, kill=kill)
        assert first.proc.returncode == -signal.SIGKILL
        answered = [u for u in uploads if u.status in (200, 201)]
        unanswered = [u for u in uploads if u.status is None]
        assert all(u.status in (200, 201, None) for u in uploads), [(u.song.title, u.status) for u in uploads]
        assert unanswered, "the kill landed after every upload was answered"

        after_kill = audit_catalogue(db, data_dir / "audio")  # before anything restarts
        # Temp files a killed `put` left: age them (as if the restart came later) and add one
        # fresh file (as if another replica were writing now): only the old ones may go.
        two_hours_ago = time.time() - 7200
        for rel in after_kill.temp_files:
            os.utime(data_dir / "audio" / rel, (two_hours_ago, two_hours_ago))
        stale = data_dir / "audio" / "00" / "00" / ".tmp-stale"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"half a file")
        os.utime(stale, (two_hours_ago, two_hours_ago))
        fresh = stale.with_name(".tmp-being-written")
        fresh.write_bytes(b"in progress")
        server, restart_s = _started(group, tmp_path / "after.log", env)
        audit = audit_catalogue(db, data_dir / "audio")
        assert audit.problems == [], audit.problems
        assert audit.temp_files == ["00/00/.tmp-being-written"], audit.temp_files  # crash leftovers swept
        fresh.unlink()
        lost = [u.song.title for u in answered if audit.tracks.get(u.sha) != u.track_id]
        assert not lost, f"tracks answered 201 but lost after the restart: {lost}"
        committed_unanswered = [u for u in unanswered if u.sha in audit.tracks]
        orphan_shas = {Path(f).name.split(".")[0] for f in audit.orphan_files}
        assert orphan_shas <= {u.sha for u in unanswered} - set(audit.tracks), audit.orphan_files
        ready = httpx.get(f"{server.url}/ready", timeout=30).json()
        assert (ready["tracks"], ready["clips"]) == (len(audit.tracks), len(audit.clip_ids)), ready
        assert _served_track_ids(server.url, db) == set(audit.tracks.values())

        # Clients retry what went unanswered (and everything else): exactly one track per song.
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for u in uploads:
                r = c.post("/tracks", files={"audio": (u.song.path.name, u.data, "audio/ogg")}, headers=AUTH)
                expected = 200 if u.sha in audit.tracks else 201
                assert r.status_code == expected, (u.song.title, r.status_code, r.text)
                if expected == 200:
                    assert r.json()["id"] == audit.tracks[u.sha]
        final = audit_catalogue(db, data_dir / "audio")
        assert final.problems == [] and len(final.tracks) == len(uploads)
        assert final.orphan_files == [] and final.temp_files == [], final  # retried uploads adopted their files
        ready = httpx.get(f"{server.url}/ready", timeout=30).json()
        assert (ready["tracks"], ready["clips"]) == (len(uploads), len(final.clip_ids))
        assert "Traceback" not in server.log.read_text(errors="replace"), server.logs()
    record(
        f"fault: kill -9 of the server during POST /tracks ({backend})",
        "no partial, no duplicate, no lost track; restart serves exactly the DB",
        uploads=len(uploads), answered_before_kill=len(answered), in_flight_at_kill=in_flight_at_kill[0],
        committed_but_unanswered=len(committed_unanswered), partial_tracks=0,
        orphan_files_after_kill=len(after_kill.orphan_files), temp_files_after_kill=len(after_kill.temp_files),
        stale_temp_files_swept_at_restart=1 + len(after_kill.temp_files),
        restart_to_ready_s=round(restart_s, 1), after_retry_tracks=len(final.tracks),
    )  # fmt: skip


# ----------------------------------------------------------------------- kill -9 the indexer
def _indexer(argv: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    env["PHOTOSCORE_AUDIO_DIR"] = argv[argv.index("--index-dir") + 1] + "-audio"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indexer", *argv], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its decode workers share its process group, for cleanup
        )  # fmt: skip


def _track_count(url: str) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.exc import DBAPIError

    from app.core.models import Track

    with session_factory_for(url) as factory, factory() as s:
        try:
            return int(s.scalar(select(func.count()).select_from(Track)) or 0)
        except DBAPIError:  # the indexer has not created the tables yet
            return 0


def _kill_when(
    proc: subprocess.Popen, url: str, condition: Callable[[int], bool], limit: float = STARTUP_TIMEOUT_S
) -> int | None:
    """SIGKILL ``proc`` as soon as the committed track count satisfies ``condition``; its decode
    workers must then exit by themselves. Returns the count seen, or None when the run finished
    first."""
    from tests.support.indexing import group_exits

    deadline = time.monotonic() + limit
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the indexer made no progress"
            seen = _track_count(url)
            if condition(seen):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                assert group_exits(proc.pid, within_s=30), "decode workers outlived the killed indexer"
                return seen
            time.sleep(0.02)
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned decode workers


def _live_index_agrees(url: str, index_dir: Path, checkpoint_hash: str, dim: int) -> str:
    """What a server starting now would serve: the index file if it matches the DB exactly,
    else a rebuild from the DB. Either way its clips must be the DB's clips, id for id."""
    from sqlalchemy import select

    from app.core.live_index import LiveIndex
    from app.core.models import Clip

    with session_factory_for(url) as factory:
        live = LiveIndex(factory, checkpoint_hash=checkpoint_hash, dim=dim, index_dir=index_dir)
        source = live.load()
        with factory() as s:
            db_ids = np.array(sorted(s.scalars(select(Clip.id))), np.int64)
        np.testing.assert_array_equal(live.table.ids, db_ids)
        np.testing.assert_array_equal(live.index.ids(), db_ids)
    return source


@pytest.mark.slow
@pytest.mark.postgres
def test_kill_9_indexer_mid_run_then_rerun(
    pg_url: str, model_checkpoint: Path, song_pool: list[Song], tmp_path: Path, record: Callable[..., None]
) -> None:
    from app.core.files import file_sha256
    from model.checkpoint import read_meta
    from tests.support.indexing import assert_consistent  # the indexer suite's own clip-for-clip check

    dim = read_meta(model_checkpoint).config.space_dim
    library = tmp_path / "library"
    library.mkdir()
    for song in song_pool[:12]:
        shutil.copy(song.path, library / song.path.name)
    index_dir = tmp_path / "index"
    audio_dir = Path(f"{index_dir}-audio")
    common = [str(library), "--database-url", pg_url, "--index-dir", str(index_dir),
              "--checkpoint", str(model_checkpoint), "--no-progress", "--copy-audio"]  # fmt: skip
    ckpt = file_sha256(model_checkpoint)
    log = tmp_path / "indexer.log"

    # Run 1: killed while tracks are being committed (decode workers in their own processes).
    proc = _indexer([*common, "--workers", "1"], log)
    first_kill = _kill_when(proc, pg_url, lambda n: n >= 3)
    assert first_kill is not None and proc.returncode == -signal.SIGKILL, log.read_text()
    after_first = audit_catalogue(pg_url, audio_dir)
    assert after_first.problems == [], after_first.problems
    assert 3 <= len(after_first.tracks) < 12, len(after_first.tracks)
    first_source = _live_index_agrees(pg_url, index_dir, ckpt, dim)

    # Run 2: killed the moment the last track is committed (finishing: index build and save).
    proc = _indexer([*common, "--workers", "0"], log)
    second_kill = _kill_when(proc, pg_url, lambda n: n >= 12)
    after_second = audit_catalogue(pg_url, audio_dir)
    assert after_second.problems == [], after_second.problems
    assert {s: i for s, i in after_second.tracks.items() if s in after_first.tracks} == after_first.tracks
    second_source = _live_index_agrees(pg_url, index_dir, ckpt, dim)

    # Run 3: completes; everything agrees, nothing was lost or duplicated, the file is usable.
    proc = _indexer([*common, "--workers", "0"], log)
    assert proc.wait(STARTUP_TIMEOUT_S) == 0, log.read_text()[-3000:]
    cat = assert_consistent(pg_url, index_dir, ckpt)
    final = audit_catalogue(pg_url, audio_dir)
    assert final.problems == [] and len(final.tracks) == 12 and final.orphan_files == []
    assert {s: i for s, i in final.tracks.items() if s in after_second.tracks} == after_second.tracks
    assert _live_index_agrees(pg_url, index_dir, ckpt, dim) == "file"
    record(
        "fault: kill -9 of the indexer mid-run (PostgreSQL), twice, then a full re-run",
        "no partial, no duplicate, no lost track; index file == DB clip for clip",
        killed_at_tracks=[first_kill, second_kill], tracks=len(cat["tracks"]), clips=len(cat["ids"]),
        index_after_kill_1=first_source, index_after_kill_2=second_source, orphans=len(final.orphan_files),
    )  # fmt: skip


# ------------------------------------------------ connection lost between last query and close
@pytest.mark.postgres
def test_connection_lost_after_the_last_query_still_answers(
    pg_url: str,
    model_checkpoint: Path,
    song_pool: list[Song],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Callable[..., None],
) -> None:
    """The outage test's first finding, made deterministic: PostgreSQL drops the request's
    connection after GET /tracks/{id} has read its row. The closing ROLLBACK then fails after
    the response has started; it used to abort the connection (client: "Server disconnected
    without sending a response"). The answer is complete, so it must be delivered."""
    import psycopg
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.core import catalogue
    from tests.support.service import service_settings

    app = create_app(service_settings(tmp_path / "data", model_checkpoint, database_url=pg_url))
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with TestClient(app) as client:
        song = song_pool[0]
        r = client.post("/tracks", files={"audio": (song.path.name, song.path.read_bytes(), "audio/ogg")},
                        headers=AUTH)  # fmt: skip
        assert r.status_code == 201, r.text
        track_id = r.json()["id"]
        real_get = catalogue.get_track

        def get_then_connection_dies(session: object, tid: int) -> object:
            track = real_get(session, tid)
            pid = session.connection().connection.dbapi_connection.info.backend_pid  # type: ignore[attr-defined]
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            return track

        monkeypatch.setattr(catalogue, "get_track", get_then_connection_dies)
        r = client.get(f"/tracks/{track_id}")
        assert r.status_code == 200 and r.json()["id"] == track_id, r.text
        monkeypatch.undo()
        assert client.get(f"/tracks/{track_id}").status_code == 200  # the pool replaced the connection
    record("fault: PostgreSQL drops the connection between a read route's last query and its close",
           "200 delivered (was: connection aborted mid-response)")  # fmt: skip


# -------------------------------------------------------------- PostgreSQL stopped under load
@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(password=f"pgpw-{secrets.token_hex(12)}")
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_stopped_during_load_fails_fast_then_recovers(
    private_pg: PrivatePostgres,
    model_checkpoint: Path,
    song_pool: list[Song],
    tmp_path: Path,
    record: Callable[..., None],
) -> None:
    url = private_pg.create_database("photoscore")
    data_dir = tmp_path / "data"
    key = f"psk-{secrets.token_urlsafe(24)}"
    env = {**_env(data_dir, model_checkpoint, url), "PHOTOSCORE_API_KEYS": api_keys_env(key)}
    auth = {"X-API-Key": key}
    healthy_s, outage_s, after_start_s = 5.0, 7.0, 8.0  # the run ends 8 s after PostgreSQL is back
    writes = iter(song_pool[10:20])
    answered: dict[str, tuple[int, int | None]] = {}  # sha -> (status, id) for the writer's uploads

    with server_group() as group:
        server, _ = _started(group, tmp_path / "server.log", env)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            seeded = []
            for song in song_pool[:3]:
                r = c.post("/tracks", files={"audio": (song.path.name, song.path.read_bytes(), "audio/ogg")},
                           headers=auth)  # fmt: skip
                assert r.status_code == 201, r.text
                seeded.append(r.json()["id"])

        def recommender(client: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
            files = {"image": ("p.jpg", photo_bytes(rng.choice(["warm", "cold"])), "image/jpeg")}
            return labelled("recommend", lambda: client.post("/recommend?n=3", files=files))

        def reader(client: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
            if rng.random() < 0.5:
                return labelled("list", lambda: client.get("/tracks"))
            return labelled("get", lambda: client.get(f"/tracks/{rng.choice(seeded)}"))

        def writer(client: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
            time.sleep(0.3)
            song = next(writes, None)
            if song is None:
                return labelled("health", lambda: client.get("/health"))
            data = song.path.read_bytes()
            op, r = labelled("add", lambda: client.post("/tracks", files={"audio": (song.path.name, data, "audio/ogg")},
                                                        headers=auth))  # fmt: skip
            answered[sha256_of(data)] = (r.status_code, r.json().get("id") if r.status_code in (200, 201) else None)
            return op, r

        def prober(client: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
            time.sleep(0.1)  # the server's own responsiveness, no database involved
            return labelled("probe", lambda: client.get("/health"))

        events: dict[str, float] = {}
        finished = threading.Event()

        def tick(elapsed: float) -> None:
            if "stop" not in events and elapsed >= healthy_s:
                events["stop"] = elapsed
                events["stop_took"] = private_pg.stop("immediate")
            elif "stop" in events and "start" not in events and elapsed >= healthy_s + outage_s:
                events["start"] = elapsed
                events["start_took"] = private_pg.start()
                events["started"] = elapsed + events["start_took"]
            elif "started" in events and elapsed >= events["started"] + after_start_s:
                finished.set()

        clients = [recommender] * 4 + [reader] * 3 + [writer, prober]
        result = drive(server.url, clients, STARTUP_TIMEOUT_S, timeout=30, on_tick=tick, stop=finished)
        assert finished.is_set(), "the run hit its time cap before PostgreSQL was back"
        stop_at = events["stop"] + events["stop_took"]
        started = events["started"]

        samples = result.samples
        transport = [s for s in samples if s.status is None]
        assert not transport, f"requests got no HTTP answer: {transport[:3]}"
        assert not [s for s in samples if s.status >= 500 and s.status != 503], "a 5xx other than 503"
        before = [s for s in samples if s.started + s.ms / 1000 < events["stop"]]
        assert before and all(s.status in (200, 201) for s in before), [s for s in before if s.status >= 400][:3]

        in_outage = [s for s in samples if stop_at + 0.5 < s.started < events["start"]]
        down = [s for s in in_outage if s.op not in ("health", "probe")]
        assert down, "no request was made while PostgreSQL was down"
        assert all(s.status == 503 for s in down), [(s.op, s.status) for s in down if s.status != 503][:5]
        assert all(s.retry_after and s.json_detail for s in down), "503 without Retry-After or a JSON detail"
        down_ms = sorted(s.ms for s in down)
        # Fast = no waiting on connect or pool timeouts (5 s, 10 s): p99 within 2 s. On a starved
        # machine the bound widens to what the server manages at that moment without a database:
        # 3x the p99 of /health probes in the same seconds, or 2x the healthy p99 before the stop.
        healthy_p99 = float(np.percentile([s.ms for s in before if s.op != "probe"], 99))
        probe_p99 = float(np.percentile([s.ms for s in in_outage if s.op == "probe"] or [0.0], 99))
        fast = max(2000.0, 2 * healthy_p99, 3 * probe_p99)
        assert np.percentile(down_ms, 99) < fast, (
            f"503s were not fast: p99 {np.percentile(down_ms, 99):.0f} ms (bound {fast:.0f} ms)"
        )

        ok_after = [s for s in samples if s.started > started and s.status in (200, 201)]
        assert ok_after, "nothing succeeded after PostgreSQL came back"
        first_ok = min(s.started for s in ok_after) - started
        late = [s for s in samples if s.started > started + 3.0]
        assert late and all(s.status in (200, 201) for s in late), [(s.op, s.status) for s in late if s.status >= 400]

        ready = httpx.get(f"{server.url}/ready", timeout=30)
        assert ready.status_code == 200, ready.text  # the sync loop recovered without a restart
        audit = audit_catalogue(url, data_dir / "audio")
        assert audit.problems == [], audit.problems
        for sha, (status, track_id) in answered.items():
            if status in (200, 201):
                assert audit.tracks.get(sha) == track_id, "a track answered 201 was lost"
            else:
                assert status == 503 and sha not in audit.tracks, "a refused upload left a track behind"
        refused = {sha for sha, (status, _) in answered.items() if status == 503}
        orphans_after_outage = len(audit.orphan_files)
        assert {Path(f).name.split(".")[0] for f in audit.orphan_files} <= refused, audit.orphan_files
        with httpx.Client(base_url=server.url, timeout=60) as c:  # clients retry what got a 503
            for song in song_pool[10:20]:
                data = song.path.read_bytes()
                if sha256_of(data) in refused:
                    r = c.post("/tracks", files={"audio": (song.path.name, data, "audio/ogg")}, headers=auth)
                    assert r.status_code == 201, r.text
        audit = audit_catalogue(url, data_dir / "audio")
        assert audit.problems == [] and audit.orphan_files == [], audit  # the retries adopted their files
        time.sleep(1.0)  # one index sync
        ready = httpx.get(f"{server.url}/ready", timeout=30)
        assert (ready.json()["tracks"], ready.json()["clips"]) == (len(audit.tracks), len(audit.clip_ids))
        assert _served_track_ids(server.url, url) == set(audit.tracks.values())
        log = server.log.read_text(errors="replace")
        assert private_pg.password not in log and key not in log, "a secret appears in the server log"
        assert "Traceback" not in log, log[-3000:]

    refused_writes = len(refused)
    record(
        "fault: private PostgreSQL stopped (immediate) during load of 8 clients, then started",
        "503 fast while down; recovered by itself; nothing lost or partial",
        requests=len(samples), during_outage=len(down), outage_statuses=sorted({s.status for s in down}),
        outage_p50_ms=round(float(np.percentile(down_ms, 50)), 1),
        outage_p99_ms=round(float(np.percentile(down_ms, 99)), 1), outage_max_ms=round(down_ms[-1], 1),
        healthy_p99_ms=round(healthy_p99, 1), health_probe_p99_during_outage_ms=round(probe_p99, 1),
        pg_stop_s=round(events["stop_took"], 2), pg_start_s=round(events["start_took"], 2),
        first_success_after_pg_start_s=round(first_ok, 2), writes_refused_503=refused_writes,
        orphan_files_after_outage=orphans_after_outage, orphan_files_after_retries=len(audit.orphan_files),
        password_or_key_in_log=False,
    )  # fmt: skip
