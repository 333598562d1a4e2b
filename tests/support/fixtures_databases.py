"""Fixtures: catalogue databases. PostgreSQL tests get a freshly created database (dropped
afterwards); ``db_url`` runs a test on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.databases import fresh_postgres_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalogue.db'}"


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Any]:
    """A session factory on a fresh, migrated SQLite catalogue."""
    from app.core.db import make_engine, make_session_factory, upgrade_database

    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return request.getfixturevalue(name)


@pytest.fixture
def migrated_db(db_url: str) -> str:
    from app.core.db import upgrade_database

    upgrade_database(db_url)
    return db_url


@pytest.fixture
def session_factory(migrated_db: str) -> Iterator[Any]:
    from app.core.db import make_engine, make_session_factory

    engine = make_engine(migrated_db)
    yield make_session_factory(engine)
    engine.dispose()
