"""Alembic migrations run forwards and backwards on Postgres and SQLite alike."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from models.db import alembic_config, current_revision, make_engine, upgrade
from ops.stack import postgres_database

TABLES = {
    "tenant",
    "end_user",
    "image",
    "reference_pair",
    "user_context",
    "judgment",
    "dimension_score",
    "batch",
    "reconcile_state",
    "calibration",
}


def _roundtrip(url: str) -> None:
    assert upgrade(url) == "0007"
    engine = make_engine(url)
    assert set(sa.inspect(engine).get_table_names()) >= TABLES
    engine.dispose()
    command.downgrade(alembic_config(url), "base")
    assert current_revision(url) is None
    engine = make_engine(url)
    assert not TABLES & set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert upgrade(url) == "0007"


def test_migrations_roundtrip_on_postgres() -> None:
    with postgres_database() as url:
        _roundtrip(url)


def test_migrations_roundtrip_on_sqlite(tmp_path: Path) -> None:
    _roundtrip(f"sqlite:///{tmp_path / 'm.db'}")
