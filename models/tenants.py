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
