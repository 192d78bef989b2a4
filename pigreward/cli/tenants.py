"""`pigreward tenants`: which image locations each tenant's API requests may name (`core.scope`)."""

from __future__ import annotations

import click

from core.scope import UPLOADS, check_prefix
from models.db import session_scope
from models.tenants import grant_prefix, list_tenants, revoke_prefix
from pigreward.cli.common import migrated_db


@click.group()
def tenants() -> None:
    """Tenants and their image prefixes (the API refuses any image outside them, uploads excepted)."""


def _prefix(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_prefix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@tenants.command("allow")
@click.argument("tenant")
@click.argument("prefix", callback=_prefix)
def tenants_allow(tenant: str, prefix: str) -> None:
    """Let TENANT's requests name images under PREFIX (s3://bucket/path/ or file://path/)."""
    with session_scope(migrated_db()) as session:
        row = grant_prefix(session=session, name=tenant, prefix=prefix)
        prefixes = list(row.image_prefixes)
    click.echo(f"tenant {tenant!r} may name: {', '.join(prefixes)} (and its uploads)")


@tenants.command("deny")
@click.argument("tenant")
@click.argument("prefix", callback=_prefix)
def tenants_deny(tenant: str, prefix: str) -> None:
    """Take a prefix back: new requests naming it answer 403 and the viewer stops showing its images."""
    with session_scope(migrated_db()) as session:
        row = revoke_prefix(session=session, name=tenant, prefix=prefix)
        if row is None:
            raise click.ClickException(f"no tenant {tenant!r}")
        prefixes = list(row.image_prefixes)
    click.echo(f"tenant {tenant!r} may name: {', '.join(prefixes) or 'nothing but its uploads'}")


@tenants.command("list")
def tenants_list() -> None:
    """Every tenant with its id, upload prefix and granted prefixes."""
    with session_scope(migrated_db()) as session:
        for t in list_tenants(session=session):
            granted = ", ".join(t.image_prefixes) or "-"
            click.echo(f"{t.id}\t{t.name}\tuploads: .../{UPLOADS}/{t.id}/\tprefixes: {granted}")
