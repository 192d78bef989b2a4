"""`pigreward db`: the database schema (Alembic migrations, SQLite or Postgres)."""

from __future__ import annotations

import click

from core.settings import get_settings
from models.db import upgrade
from pigreward.cli.common import redact


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations (SQLite or Postgres, from PIGREWARD_DATABASE_URL)."""
    url = get_settings().resolved_database_url
    now = upgrade(url, revision)
    click.echo(f"database at revision {now}: {redact(url)}")
