"""`pigreward refs`: users' reference pairs (users are created on first use)."""

from __future__ import annotations

import click

from core.settings import get_settings
from models.db import session_scope
from models.references import add_reference
from models.tenants import ensure_tenant
from models.users import ensure_user
from pigreward.cli.common import as_uri, migrated_db
from tasks.config import store_config
from workers.store import ImageStore


@click.group()
def refs() -> None:
    """Users' reference pairs."""


@refs.command("add")
@click.option("--user", required=True, help="The end user's external id (created if new).")
@click.option("--prompt", required=True)
@click.argument("chosen")
@click.argument("rejected")
def refs_add(user: str, prompt: str, chosen: str, rejected: str) -> None:
    """Add one reference pair: the user preferred CHOSEN over REJECTED (local files or URIs)."""
    settings = get_settings()
    db = migrated_db()
    store = ImageStore(store_config(settings))
    chosen_uri, rejected_uri = as_uri(chosen, store), as_uri(rejected, store)
    with session_scope(db) as session:
        tenant = ensure_tenant(session=session, name=settings.default_tenant)
        assert tenant.id is not None
        row = ensure_user(session=session, tenant_id=tenant.id, external_id=user)
        assert row.id is not None
        ref = add_reference(
            session=session, user_id=row.id, prompt=prompt, chosen_uri=chosen_uri, rejected_uri=rejected_uri
        )
    click.echo(f"reference {ref.id} for user {user!r}: {chosen_uri} > {rejected_uri}")
