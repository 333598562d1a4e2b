"""Engine and session factories, and programmatic Alembic migrations.

SQLite is the embedded default, so it is tuned for one writer beside many readers (WAL, busy
timeout) and gets real transactions (pysqlite's own BEGIN handling breaks SAVEPOINTs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import first_line

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_lock key serialising migrations between API replicas and indexer jobs.
MIGRATION_LOCK_KEY = 0x5053_4D49


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or opened; the message says which URL and why."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``: SQLite gets WAL, foreign keys and a busy timeout; others pre-ping."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        in_memory = not database or database == ":memory:" or parsed.query.get("mode") == "memory"
        if database and not in_memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _tune_sqlite(engine, wal=not in_memory)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _tune_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, emit BEGIN so SAVEPOINT and rollback behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (objects are handed to responses)."""
    return sessionmaker(engine, expire_on_commit=False)


def check_database(url: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`DatabaseUnavailableError` with a one-line reason when ``url`` is unusable."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout_s))}
    try:
        engine = make_engine(url, **kwargs)
    except Exception as exc:  # bad URL, missing driver, unwritable folder
        raise DatabaseUnavailableError(f"cannot use database {_safe(url)}: {first_line(exc)}") from exc
    try:
        ping(engine)
    except Exception as exc:
        raise DatabaseUnavailableError(f"cannot reach database {_safe(url)}: {first_line(exc)}") from exc
    finally:
        engine.dispose()


def ping(engine: Engine) -> None:
    """One round trip to the database (raises what the driver raises when it is unreachable)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(url: str) -> Any:
    """An Alembic ``Config`` for ``migrations/`` bound to ``url`` (no alembic.ini on disk needed)."""
    from alembic.config import Config

    ini = MIGRATIONS_DIR / "alembic.ini"
    cfg = Config(str(ini)) if ini.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (idempotent; safe at every start)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def migrate_database(url: str, engine: Engine | None = None) -> None:
    """``upgrade_database`` that is safe when several processes start at once (PostgreSQL lock).

    ``engine``: take the lock through this engine (its connect timeout applies), else a new one."""
    if make_url(url).get_backend_name() != "postgresql":
        upgrade_database(url)
        return
    own = engine is None
    bind = make_engine(url) if engine is None else engine
    try:
        with bind.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                upgrade_database(url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        if own:
            bind.dispose()


def downgrade_database(url: str, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (used by tests and operators)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def _safe(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)
