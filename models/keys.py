"""API keys: created once (shown once), stored as a sha256, found by a short public prefix."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlmodel import Session, col, select

from models.tables import ApiKey, Tenant, id_of, utcnow
from models.tenants import ensure_tenant

KEY_PREFIX = "pgr"
KEY_FORMAT = re.compile(r"pgr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", re.ASCII)
"""What `create_key` makes; anything else (a NUL, a surrogate, a pasted fragment) is refused unread."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(*, session: Session, tenant: str, name: str) -> tuple[ApiKey, str]:
    """A new key for `tenant` (created if new); returns the row and the only copy of the key."""
    tenant_row = ensure_tenant(session=session, name=tenant)
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(tenant_id=id_of(tenant_row), name=name, prefix=prefix, key_hash=_hash(key))
    session.add(row)
    session.flush()
    return row, key


def verify_key(*, session: Session, key: str) -> Tenant | None:
    """The tenant a live key belongs to, or None (unknown, malformed, revoked)."""
    if not KEY_FORMAT.fullmatch(key):
        return None
    parts = key.split("_", 2)
    row = session.exec(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    row.last_used_at = utcnow()
    session.add(row)
    return session.get(Tenant, row.tenant_id)


def revoke_key(*, session: Session, key_id: int) -> ApiKey | None:
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
    return row


def list_keys(*, session: Session, tenant: str | None = None) -> list[tuple[ApiKey, str]]:
    stmt = (
        select(ApiKey, Tenant.name)
        .join(Tenant, col(Tenant.id) == col(ApiKey.tenant_id))
        .order_by(col(ApiKey.id))
    )
    if tenant is not None:
        stmt = stmt.where(Tenant.name == tenant)
    return [(k, t) for k, t in session.exec(stmt)]
