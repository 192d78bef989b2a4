"""`pigreward keys`: API keys of tenants (only a hash is stored; a key is shown once)."""

from __future__ import annotations

import click

from models.db import session_scope
from models.keys import create_key, list_keys, revoke_key
from pigreward.cli.common import migrated_db
from tasks.runtime import get_db


@click.group()
def keys() -> None:
    """API keys (only a hash is stored; a key is shown once)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to (created if new).")
@click.option("--name", default="default", show_default=True, help="A label for the key.")
def keys_create(tenant: str, name: str) -> None:
    """Create a key and print it once."""
    with session_scope(migrated_db()) as session:
        row, key = create_key(session=session, tenant=tenant, name=name)
        key_id = row.id
    click.echo(key)
    click.echo(f"key {key_id} for tenant {tenant!r} ({name}); store it now, it is not shown again", err=True)


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def keys_list(tenant: str | None) -> None:
    """List keys (id, tenant, name, prefix, state)."""
    with session_scope(get_db()) as session:
        for key, tenant_name in list_keys(session=session, tenant=tenant):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            click.echo(f"{key.id}\t{tenant_name}\t{key.name}\tpgr_{key.prefix}_...\t{state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key by id: requests with it answer 401 from now on."""
    with session_scope(get_db()) as session:
        row = revoke_key(session=session, key_id=key_id)
    if row is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"key {key_id} revoked")
