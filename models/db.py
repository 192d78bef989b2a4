"""Engine and session handling, and schema migrations (Alembic) for SQLite and Postgres.

The engine is built once per process from a URL the caller passes in; tables come from the
migrations in `models/migrations`, never from `create_all`, so SQLite and Postgres stay identical.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import CursorResult, Engine, Result
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


PING_AFTER_IDLE_S = 1.0
"""A pooled connection idle longer than this is pinged before use (see `make_engine`)."""


def make_engine(url: str) -> Engine:
    """An engine tuned for our use: WAL + busy timeout on SQLite, an idle-aware ping on servers.

    SQLAlchemy's `pool_pre_ping` costs a round trip on every checkout, several per judgment (~6% of
    the orchestration benchmark). Here a connection is pinged only when it sat idle in the pool for
    over `PING_AFTER_IDLE_S` (where a database restart can have killed it unnoticed): a dead one is
    replaced before the caller sees it. A connection that dies while in steady use fails its next
    statement instead; SQLAlchemy then invalidates the whole pool, the judgment pipeline retries it
    as a transient error, and the API answers that one request 503.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)

    @sa.event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool discards this connection and checks out another
            raise sa.exc.DisconnectionError(f"idle connection failed its ping: {exc}") from exc

    return engine


def affected(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (`Session.execute` types its result without `rowcount`)."""
    return cast("CursorResult[Any]", result).rowcount


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


def downgrade(url: str, revision: str) -> str:
    """Take the schema at `url` back to `revision` (e.g. "-1", "0005", "base"); returns the one now current."""
    command.downgrade(alembic_config(url), revision)
    return current_revision(url) or "base"


@dataclass(frozen=True)
class Migration:
    revision: str
    down_revision: str | None
    title: str


def migrations() -> list[Migration]:
    """Every migration, oldest first (what `pigreward db history` lists)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    found = [
        Migration(str(r.revision), str(r.down_revision) if r.down_revision else None, (r.doc or "").strip())
        for r in script.walk_revisions()
    ]
    return list(reversed(found))


def head_revision() -> str:
    return migrations()[-1].revision


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
