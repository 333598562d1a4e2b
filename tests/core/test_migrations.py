"""Alembic migrations on SQLite and PostgreSQL: empty -> head -> base -> head, and no drift."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.db import downgrade_database, make_engine, migrate_database, upgrade_database
from app.core.models import Base
from tests.support import REPO

TABLES = {"tracks", "clips", "track_events"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _drift(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    assert _tables(db_url) == set()
    upgrade_database(db_url)
    assert _tables(db_url) == TABLES
    assert _drift(db_url) == [], "app.core.models and migrations disagree"
    upgrade_database(db_url)  # idempotent at head
    downgrade_database(db_url, "base")
    assert _tables(db_url) == set()
    upgrade_database(db_url)
    assert _tables(db_url) == TABLES
    assert _drift(db_url) == []


def test_alembic_command_line(sqlite_url: str) -> None:
    """Operators can run alembic itself with the shipped ini (URL via -x or the environment)."""
    cmd = [sys.executable, "-m", "alembic", "-c", str(REPO / "migrations" / "alembic.ini")]
    for args in (["-x", f"url={sqlite_url}", "upgrade", "head"], ["current"]):
        out = subprocess.run(
            cmd + args,
            capture_output=True,
            text=True,
            check=False,
            env={"PHOTOSCORE_DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 0, out.stderr
    assert "0003_track_bank_stats (head)" in out.stdout
    assert _tables(sqlite_url) == TABLES


@pytest.mark.postgres
def test_postgres_types(pg_url: str) -> None:
    """Ids are BIGINT on PostgreSQL (FAISS ids are int64) and clips cascade on track delete."""
    upgrade_database(pg_url)
    engine = make_engine(pg_url)
    try:
        insp = inspect(engine)
        cols = {c["name"]: c for c in insp.get_columns("clips")}
        assert str(cols["id"]["type"]) == "BIGINT"
        assert str(cols["embedding"]["type"]) == "BYTEA"
        (fk,) = insp.get_foreign_keys("clips")
        assert fk["options"].get("ondelete") == "CASCADE"
        assert insp.get_unique_constraints("tracks")[0]["column_names"] == ["sha256"]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_migrations_are_serialised(pg_url: str) -> None:
    """API replicas and an indexer job may all start on an empty database at once."""
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            migrate_database(pg_url)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _tables(pg_url) == TABLES
