"""Engine and session handling, and schema migrations (Alembic) for SQLite and Postgres.

The engine is built once per process from a URL the caller passes in; tables come from the
migrations in `models/migrations`, never from `create_all`, so SQLite and Postgres stay identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """An engine tuned for our use: WAL + busy timeout on SQLite, a checked pool on servers.

    `pre_ping=False` is for the workers' hot path (see below); the API and CLI keep the ping so a
    request after a database restart is answered, not failed.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # Without the ping (a round trip per checkout, several per judgment) a dead connection raises an
    # OperationalError that the pipeline turns into a retried transient error, and SQLAlchemy then
    # invalidates the whole pool: a database restart costs one retried statement per process.
    return sa.create_engine(url, pool_pre_ping=pre_ping, pool_size=10, max_overflow=20, pool_recycle=1800)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Bring the schema at `url` to `revision`; returns the revision now current."""
    if url.startswith("sqlite"):
        make_engine(url).dispose()  # creates the parent folder of the file
    command.upgrade(alembic_config(url), revision)
    return current_revision(url) or "base"


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
