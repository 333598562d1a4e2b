"""Fixtures for the reliability suite, and a figures table printed at the end of the run.

Every case calls ``record(case, result, **figures)``; the rows are printed in the terminal
summary and, when ``PHOTOSCORE_RELIABILITY_FIGURES=path.json`` is set, written there (the source
of the table in docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import DEFAULT_CHECKPOINT
from tests.support.servers import STARTUP_TIMEOUT_S, LiveService, api_keys_env, launch_server, server_group, wait_ready
from tests.support.songs import Song, spare_song

_FIGURES = pytest.StashKey[list]()

# Wesnoth soundtrack pieces, cut to a few seconds each: distinct real songs for writes.
STEMS = [
    "knalgan_theme", "vengeful", "the_dangerous_symphony", "knolls", "suspense", "casualties_of_war",
    "battle", "northerners", "siege_of_laurelmor", "weight_of_revenge", "return_to_wesnoth",
    "the_city_falls", "the_king_is_dead", "wanderer", "traveling_minstrels", "nunc_dimittis",
    "the_deep_path", "journeys_end", "northern_mountains", "heroes_rite",
]  # fmt: skip


@pytest.fixture(scope="session")
def model_checkpoint(tiny_checkpoint: Path) -> Path:
    """The tiny real checkpoint (fast, deterministic); the shipped model on request.

    ``PHOTOSCORE_RELIABILITY_SHIPPED_MODEL=1`` runs the suite on
    model/default/photoscore-default.safetensors when it exists.
    """
    if os.environ.get("PHOTOSCORE_RELIABILITY_SHIPPED_MODEL") == "1" and DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    return tiny_checkpoint


@pytest.fixture(scope="session")
def song_pool(tmp_path_factory: pytest.TempPathFactory) -> list[Song]:
    """Twenty distinct real songs (4 s Ogg Vorbis cuts of Wesnoth's soundtrack)."""
    folder = tmp_path_factory.mktemp("reliability-songs")
    return [spare_song(folder, stem, seconds=4.0) for stem in STEMS]


@pytest.fixture(scope="package")
def live_service(model_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One real server for the auth and fuzzing modules: SQLite, two random API keys, debug logs.

    Its whole log is later searched for the keys, so they are random and unique.
    """
    root = tmp_path_factory.mktemp("live")
    keys = (f"psk-{secrets.token_urlsafe(24)}", f"psk-{secrets.token_urlsafe(24)}")
    with server_group() as group:
        server = launch_server(
            root / "server.log",
            {
                "PHOTOSCORE_DATA_DIR": str(root / "data"),
                "PHOTOSCORE_CHECKPOINT": str(model_checkpoint),
                "PHOTOSCORE_API_KEYS": api_keys_env(*keys),
                "PHOTOSCORE_LOG_LEVEL": "debug",
                "PHOTOSCORE_MAX_UPLOAD_MB": "5",
                "PHOTOSCORE_INDEX_SYNC_SECONDS": "0.5",
            },
        )
        group.append(server)
        wait_ready(server, timeout=STARTUP_TIMEOUT_S)
        yield LiveService(server, root / "data", keys)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(case, result, **figures)``: one row of the reliability table."""
    rows = request.config.stash.setdefault(_FIGURES, [])

    def _record(case: str, result: str, **figures: Any) -> None:
        rows.append({"test": request.node.nodeid, "case": case, "result": result, **figures})

    return _record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_FIGURES, [])
    if not rows:
        return
    terminalreporter.section("reliability figures")
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("test", "case", "result")}
        terminalreporter.write_line(f"{row['case']}: {row['result']}" + (f"  {json.dumps(extra)}" if extra else ""))
    out = os.environ.get("PHOTOSCORE_RELIABILITY_FIGURES")
    if out:
        Path(out).write_text(json.dumps(rows, indent=1, default=str))
