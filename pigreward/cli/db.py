"""`pigreward db`: the database schema (Alembic migrations, SQLite or Postgres)."""

from __future__ import annotations

import click

from core.settings import get_settings
from models.db import current_revision, downgrade, head_revision, migrations, upgrade
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


@db.command("current")
def db_current() -> None:
    """The schema revision of the configured database, and whether it is the newest."""
    url = get_settings().resolved_database_url
    now = current_revision(url)
    head = head_revision()
    if now is None:
        click.echo(f"database has no schema yet (newest: {head}); run `pigreward db upgrade`: {redact(url)}")
    elif now == head:
        click.echo(f"database at revision {now} (the newest): {redact(url)}")
    else:
        click.echo(f"database at revision {now}; newest is {head}, run `pigreward db upgrade`: {redact(url)}")


@db.command("history")
def db_history() -> None:
    """Every migration, oldest first; the configured database's revision is marked."""
    now = current_revision(get_settings().resolved_database_url)
    for m in migrations():
        mark = "  <- current" if m.revision == now else ""
        click.echo(f"{m.revision}  {m.title.splitlines()[0] if m.title else ''}{mark}")


@db.command("downgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_downgrade(revision: str, yes: bool) -> None:
    """Take the schema back to REVISION (e.g. -1, 0005, base); columns added since are dropped."""
    url = get_settings().resolved_database_url
    if not yes:
        click.confirm(
            f"downgrade {redact(url)} to {revision}? columns added since then are dropped", abort=True
        )
    now = downgrade(url, revision)
    click.echo(f"database at revision {now}: {redact(url)}")
