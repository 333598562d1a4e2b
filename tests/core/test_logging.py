"""Quiet start-up: at the default level the CLI prints its own lines and the libraries' warnings,
not their INFO start-up narration (faiss's loader, alembic's plugins), which reads like errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port

PHOTOSCORE = Path(sys.prefix) / "bin" / "photoscore"
NOISE = ("faiss.loader", "alembic.runtime", "ModuleNotFoundError")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    env.update(PHOTOSCORE_DATA_DIR=str(tmp_path / "var"), PHOTOSCORE_DEVICE="cpu", **extra)
    return env


def _index(tmp_path: Path, *options: str) -> str:
    music = tmp_path / "music"
    music.mkdir(exist_ok=True)
    (music / "broken.ogg").write_bytes(b"not audio")  # one failure for the summary
    done = subprocess.run(
        [str(PHOTOSCORE), *options, "index", str(music), "--no-progress"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_index_prints_its_own_lines_only(tmp_path: Path) -> None:
    output = _index(tmp_path)
    assert "photoscore index: summary" in output and "tracks failed   1" in output
    noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], noisy


def test_verbose_shows_library_lines(tmp_path: Path) -> None:
    """-v turns the libraries' lines back on: the quiet default is the filter, not their absence."""
    output = _index(tmp_path, "-v")
    assert "faiss.loader" in output and "alembic.runtime" in output, output[-3000:]


def test_serve_start_up_is_quiet_but_warnings_show(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`photoscore serve` with no API key: its own warning shows, library INFO lines do not."""
    port = free_port()
    env = _env(tmp_path, PHOTOSCORE_PORT=str(port), PHOTOSCORE_CHECKPOINT=str(tiny_checkpoint))
    proc = subprocess.Popen(
        [str(PHOTOSCORE), "serve"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "Application startup complete" in line or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    output = "\n".join(lines) + "\n" + rest
    assert "Application startup complete" in output, output[-3000:]
    assert any("WARNING" in line and "no API key configured" in line for line in lines), output[-3000:]
    noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], noisy


@pytest.mark.parametrize("verbose", [False, True])
def test_configure_logging_levels(verbose: bool) -> None:
    """Library loggers start at WARNING (their warnings still pass); -v leaves them to the root."""
    import logging

    from app.core.logs import QUIET_LIBRARIES, configure_logging

    saved = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    try:
        configure_logging(verbose=verbose)
        for name in QUIET_LIBRARIES:
            assert logging.getLogger(name).level == (logging.NOTSET if verbose else logging.WARNING)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
