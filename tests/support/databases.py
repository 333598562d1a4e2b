"""Databases for the tests: a fresh PostgreSQL database on the shared server, a private
PostgreSQL cluster of our own, and session factories for a URL."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import free_port

PG_ADMIN_URL = os.environ.get("PHOTOSCORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


# -------------------------------------------------------------------- the shared PostgreSQL
def _pg_connect(admin_url: str) -> Any:
    import psycopg

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True, connect_timeout=3)


def _start_local_postgres() -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            capture_output=True,
            timeout=60,
        )


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (created here, dropped afterwards), so tests never
    clash with other runs on the same server; an unreachable server fails with a clear message."""
    from sqlalchemy.engine import make_url

    try:
        conn = _pg_connect(PG_ADMIN_URL)
    except Exception:
        _start_local_postgres()
        try:
            conn = _pg_connect(PG_ADMIN_URL)
        except Exception as exc:
            problem = str(exc).splitlines()[0] if str(exc) else repr(exc)
            pytest.fail(
                f"PostgreSQL is unreachable at {make_url(PG_ADMIN_URL).render_as_string()}: {problem}. "
                "Start it (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) "
                "or set PHOTOSCORE_TEST_POSTGRES_URL.",
                pytrace=False,
            )
    name = f"photoscore_test_{secrets.token_hex(6)}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def session_factory_for(url: str) -> Iterator[Any]:
    from app.core.db import make_engine, make_session_factory

    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- a private PostgreSQL
def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("a private PostgreSQL needs initdb/pg_ctl (apt-get install postgresql)", pytrace=False)
    return found[-1].parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free loopback port, ours to stop and start.

    The machine's shared cluster is never touched. PostgreSQL refuses to run as root, so as
    root everything runs as the `postgres` user in a folder it owns.
    """

    def __init__(self, password: str) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.password = password
        self.root = Path(tempfile.mkdtemp(prefix="photoscore-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        proc = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}\n{self.logs()}")
        return proc

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "-N")

    def start(self) -> float:
        """Start and wait until it accepts connections; returns the seconds it took."""
        t0 = time.perf_counter()
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60",
                  "start")  # fmt: skip
        return time.perf_counter() - t0

    def stop(self, mode: str = "immediate") -> float:
        t0 = time.perf_counter()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        return time.perf_counter() - t0

    def running(self) -> bool:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run([*prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True).returncode == 0  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.data.exists() and self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
