"""Tenants, end users and their reference pairs."""

from __future__ import annotations

from sqlmodel import Session, col, select

from models.tables import EndUser, ReferencePair, Tenant
from models.upsert import insert_ignore, natural_key


def ensure_tenant(*, session: Session, name: str) -> Tenant:
    insert_ignore(session, Tenant, [{"name": name}], ["name"])
    return session.exec(select(Tenant).where(Tenant.name == name)).one()


def find_tenant(*, session: Session, name: str) -> Tenant | None:
    return session.exec(select(Tenant).where(Tenant.name == name)).first()


def ensure_user(*, session: Session, tenant_id: int, external_id: str) -> EndUser:
    insert_ignore(
        session, EndUser, [{"tenant_id": tenant_id, "external_id": external_id}], ["tenant_id", "external_id"]
    )
    return find_user(session=session, tenant_id=tenant_id, external_id=external_id)  # type: ignore[return-value]


def find_user(*, session: Session, tenant_id: int, external_id: str) -> EndUser | None:
    stmt = select(EndUser).where(EndUser.tenant_id == tenant_id, EndUser.external_id == external_id)
    return session.exec(stmt).first()


def reference_key(user_id: int, prompt: str, chosen_uri: str, rejected_uri: str) -> str:
    return natural_key("reference", user_id, prompt, chosen_uri, rejected_uri)


def add_reference(
    *, session: Session, user_id: int, prompt: str, chosen_uri: str, rejected_uri: str
) -> ReferencePair:
    """Add one (prompt, chosen, rejected) pair; adding the same pair twice keeps one row."""
    key = reference_key(user_id, prompt, chosen_uri, rejected_uri)
    row = {
        "key": key,
        "user_id": user_id,
        "prompt": prompt,
        "chosen_uri": chosen_uri,
        "rejected_uri": rejected_uri,
    }
    insert_ignore(session, ReferencePair, [row], ["key"])
    return session.exec(select(ReferencePair).where(ReferencePair.key == key)).one()


def list_references(*, session: Session, user_id: int) -> list[ReferencePair]:
    stmt = select(ReferencePair).where(ReferencePair.user_id == user_id).order_by(col(ReferencePair.id))
    return list(session.exec(stmt))
