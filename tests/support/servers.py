"""Real servers on loopback: `python -m app.cli.serve` (what `photoscore serve` runs) on a free
port, its readiness, and the records the suites keep about a running one."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import API_KEY, REPO
from tests.support.songs import Song

# A shared, busy machine can take minutes to start a server (torch import, model load): wait
# that long rather than fail. Every deadline of the reliability suite scales with it.
STARTUP_TIMEOUT_S = float(os.environ.get("PHOTOSCORE_RELIABILITY_STARTUP_S", "300"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def api_keys_env(*keys: str) -> str:
    """PHOTOSCORE_API_KEYS spelled so that Settings reads back `keys`.

    The documented form is comma separated; a pydantic-settings that JSON-decodes list fields
    first needs a JSON list instead. Ask Settings itself rather than guess.
    """
    from unittest import mock

    from app.core.settings import Settings

    for candidate in (",".join(keys), json.dumps(list(keys))):
        with mock.patch.dict(os.environ, {"PHOTOSCORE_API_KEYS": candidate}):
            try:
                if Settings().api_keys == list(keys):
                    return candidate
            except Exception:
                continue
    raise AssertionError("Settings cannot read PHOTOSCORE_API_KEYS from the environment")


def launch_server(log: Path, env: dict[str, str]) -> Server:
    """Start `python -m app.cli.serve` (= `photoscore serve`) on a free loopback port.

    No PHOTOSCORE_* variable of the caller's environment leaks in; `env` sets the rest (data
    dir, checkpoint, ...). The API key is `API_KEY` unless `env` names others.
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    full_env.update({"PHOTOSCORE_DEVICE": "cpu", "PHOTOSCORE_API_KEYS": api_keys_env(API_KEY), **env})
    full_env.update({"PHOTOSCORE_HOST": "127.0.0.1", "PHOTOSCORE_PORT": str(port)})
    full_env.setdefault("PHOTOSCORE_LOG_LEVEL", "warning")
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.serve"], cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    return Server(f"http://127.0.0.1:{port}", proc, log)


def wait_ready(server: Server, timeout: float = 90.0) -> None:
    """Wait until `GET /ready` answers 200; fails (and stops the server) after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            r = httpx.get(f"{server.url}/ready", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    server.stop()
    raise AssertionError(f"server not ready after {timeout:.0f} s ({last}):\n{server.logs()}")


@contextlib.contextmanager
def server_group() -> Iterator[list[Server]]:
    """Collects servers started inside the block and stops them all at the end."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def seed_tracks(url: str, songs: list[Song]) -> list[dict]:
    """Add `songs` to a running server through `POST /tracks`; the tracks as the API returned them."""
    from tests.support.service import add_song

    tracks = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for song in songs:
            r = add_song(client, song, **({"album": song.album} if song.album is not None else {}))
            assert r.status_code in (200, 201), r.text
            tracks.append(r.json())
    return tracks


@dataclass
class LiveServer:
    """The page tests' server: its URL and data dir, the tracks seeded into it, a spare song."""

    url: str
    data_dir: Path
    seeded: list[dict] = field(default_factory=list)  # track JSON as the API returned it
    spare: Song | None = None  # a real song not yet in the catalogue
    log: Path | None = None


@dataclass
class LiveService:
    """The reliability suite's server: a real `photoscore serve` process on loopback, with what
    it stores on disk."""

    server: Server
    data_dir: Path
    keys: tuple[str, ...]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'photoscore.db'}"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    def log_text(self) -> str:
        return self.server.log.read_text(errors="replace")
