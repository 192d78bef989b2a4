"""Tenants: the API clients' organisations; every user, judgment and batch belongs to one."""

from __future__ import annotations

from sqlmodel import Session, select

from models.tables import Tenant
from models.upsert import insert_ignore


def ensure_tenant(*, session: Session, name: str) -> Tenant:
    insert_ignore(session, Tenant, [{"name": name}], ["name"])
    return session.exec(select(Tenant).where(Tenant.name == name)).one()


def find_tenant(*, session: Session, name: str) -> Tenant | None:
    return session.exec(select(Tenant).where(Tenant.name == name)).first()


def tenant_name(*, session: Session, tenant_id: int) -> str:
    """The tenant's name (its id as text if the row is gone)."""
    tenant = session.get(Tenant, tenant_id)
    return tenant.name if tenant else str(tenant_id)


def grant_prefix(*, session: Session, name: str, prefix: str) -> Tenant:
    """Let the tenant's requests name images under `prefix` (checked by `core.scope.check_prefix`)."""
    tenant = ensure_tenant(session=session, name=name)
    if prefix not in tenant.image_prefixes:
        tenant.image_prefixes = [*tenant.image_prefixes, prefix]
        session.add(tenant)
    return tenant


def revoke_prefix(*, session: Session, name: str, prefix: str) -> Tenant | None:
    """Take a grant back (the viewer stops serving pictures under it at once); None if no such tenant."""
    tenant = find_tenant(session=session, name=name)
    if tenant is not None and prefix in tenant.image_prefixes:
        tenant.image_prefixes = [p for p in tenant.image_prefixes if p != prefix]
        session.add(tenant)
    return tenant


def list_tenants(*, session: Session) -> list[Tenant]:
    return list(session.exec(select(Tenant).order_by(Tenant.name)))
