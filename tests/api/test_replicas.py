"""Real servers on loopback (`python -m app.cli.serve`, what `photoscore serve` runs).

* Concurrent requests to one server are micro-batched (seen in the batch-size metric) and all
  get the same answer for the same photo.
* Two replicas sharing one PostgreSQL: a track added or deleted through one appears in or leaves
  the other's results within seconds, without restart.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import API_KEY
from tests.support.media import photo_bytes
from tests.support.servers import launch_server, server_group, wait_ready
from tests.support.songs import spare_song

AUTH = {"X-API-Key": API_KEY}
PROPAGATION_LIMIT_S = 5.0


def recommend(client: httpx.Client, image: bytes, n: int = 100) -> dict:
    r = client.post(f"/recommend?n={n}", files={"image": ("p.jpg", image, "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def add(client: httpx.Client, path: Path) -> dict:
    r = client.post("/tracks", files={"audio": (path.name, path.read_bytes(), "audio/ogg")}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def wait_until(condition: Callable[[], bool], limit: float) -> float:
    """Seconds until `condition()` holds; fails after `limit` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > limit:
            raise AssertionError(f"condition not met within {limit} s")
        time.sleep(0.1)
    return time.monotonic() - start


def batch_histogram(metrics_text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "photoscore_inference_batch_size":
            for sample in family.samples:
                key = sample.name.rsplit("_", 1)[-1]
                if key == "bucket":
                    out[f"le={sample.labels['le']}"] = sample.value
                else:
                    out[key] = sample.value
    return out


def test_concurrent_requests_are_micro_batched(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    song = spare_song(tmp_path / "songs", "love_theme")
    with server_group() as group:
        server = launch_server(
            tmp_path / "server.log",
            {
                "PHOTOSCORE_DATA_DIR": str(tmp_path / "data"),
                "PHOTOSCORE_CHECKPOINT": str(tiny_checkpoint),
                "PHOTOSCORE_BATCH_MAX_SIZE": "16",
                "PHOTOSCORE_BATCH_MAX_WAIT_MS": "25",
            },
        )
        group.append(server)
        wait_ready(server)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:
            add(client, song.path)
            image = photo_bytes("warm")
            sequential = []
            for _ in range(10):
                t0 = time.perf_counter()
                expected = recommend(client, image)
                sequential.append((time.perf_counter() - t0) * 1000)
            before = batch_histogram(client.get("/metrics").text)

            def one(_: int) -> tuple[dict, float]:
                t0 = time.perf_counter()
                body = recommend(client, image)
                return body, (time.perf_counter() - t0) * 1000

            with ThreadPoolExecutor(24) as pool:
                t0 = time.perf_counter()
                answers = list(pool.map(one, range(48)))
                wall = time.perf_counter() - t0
            after = batch_histogram(client.get("/metrics").text)

        assert all(body["results"] == expected["results"] for body, _ in answers)
        batches = after["count"] - before["count"]
        images = after["sum"] - before["sum"]
        singles = after["le=1.0"] - before["le=1.0"]
        assert images == 48
        assert batches < 48 and singles < batches, (after, before)  # some batches held > 1 image
        latencies = sorted(ms for _, ms in answers)
        with capsys.disabled():
            print(
                f"\n[micro-batching] 48 concurrent /recommend: {batches:.0f} batches "
                f"(mean {images / batches:.1f} images/batch), {48 / wall:.1f} req/s, "
                f"p50 {statistics.median(latencies):.0f} ms, p95 {latencies[int(0.95 * 47)]:.0f} ms; "
                f"sequential p50 {statistics.median(sequential):.0f} ms"
            )


@pytest.mark.postgres
def test_two_replicas_share_postgres(
    tiny_checkpoint: Path, tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture
) -> None:
    first_song = spare_song(tmp_path / "songs", "knolls")
    second_song = spare_song(tmp_path / "songs", "love_theme")
    image = photo_bytes("cold")
    with server_group() as group:
        for name in ("a", "b"):  # both start at once on an empty database: migrations race
            group.append(
                launch_server(
                    tmp_path / f"{name}.log",
                    {
                        "PHOTOSCORE_DATABASE_URL": pg_url,
                        "PHOTOSCORE_DATA_DIR": str(tmp_path / name),
                        "PHOTOSCORE_AUDIO_DIR": str(tmp_path / "shared-audio"),  # a shared volume
                        "PHOTOSCORE_CHECKPOINT": str(tiny_checkpoint),
                        "PHOTOSCORE_INDEX_SYNC_SECONDS": "0.5",
                    },
                )
            )
        server_a, server_b = group
        for server in group:
            wait_ready(server)
        with (
            httpx.Client(base_url=server_a.url, timeout=60) as a,
            httpx.Client(base_url=server_b.url, timeout=60) as b,
        ):

            def ids(client: httpx.Client) -> set[int]:
                return {r["track"]["id"] for r in recommend(client, image)["results"]}

            assert ids(a) == ids(b) == set()
            first = add(a, first_song.path)
            assert first["id"] in ids(a)  # the writer's own index: at once
            assert b.get(f"/tracks/{first['id']}").status_code == 200  # the DB: at once
            add_lag = wait_until(lambda: first["id"] in ids(b), PROPAGATION_LIMIT_S)

            second = add(b, second_song.path)
            wait_until(lambda: second["id"] in ids(a), PROPAGATION_LIMIT_S)
            assert recommend(a, image)["results"] == recommend(b, image)["results"]
            audio = a.get(second["audio_url"], headers={"Range": "bytes=0-15"})
            assert audio.status_code == 206 and audio.content[:4] == b"OggS"

            assert b.delete(f"/tracks/{first['id']}", headers=AUTH).status_code == 204
            assert first["id"] not in ids(b)
            assert first["id"] not in ids(a)  # results are checked against the DB at once...
            assert a.get(f"/tracks/{first['id']}").status_code == 404
            # ... and the other replica's live index drops the track's clips within seconds
            delete_lag = wait_until(lambda: a.get("/ready").json()["tracks"] == 1, PROPAGATION_LIMIT_S)
            ready_a, ready_b = a.get("/ready").json(), b.get("/ready").json()
            assert ready_a["tracks"] == ready_b["tracks"] == 1
            assert ready_a["clips"] == ready_b["clips"] == second["clip_count"]
        with capsys.disabled():
            print(f"\n[replicas] add visible on the other replica after {add_lag:.2f} s, "
                  f"delete after {delete_lag:.2f} s (sync every 0.5 s)")  # fmt: skip
