"""Versioned user contexts (C_u): looked up by the exact versions they were built with."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from core.enums import ContextStatus
from models.tables import UserContext
from models.upsert import insert_ignore

_VERSION_COLUMNS = ["user_id", "references_hash", "backend", "model_id", "model_revision", "template_version"]


def find_context(
    *,
    session: Session,
    user_id: int,
    references_hash: str,
    backend: str,
    model_id: str,
    model_revision: str,
    template_version: str,
) -> UserContext | None:
    stmt = select(UserContext).where(
        UserContext.user_id == user_id,
        UserContext.references_hash == references_hash,
        UserContext.backend == backend,
        UserContext.model_id == model_id,
        UserContext.model_revision == model_revision,
        UserContext.template_version == template_version,
        UserContext.status == ContextStatus.ready,
    )
    return session.exec(stmt).first()


def save_context(
    *,
    session: Session,
    user_id: int,
    references_hash: str,
    reference_count: int,
    backend: str,
    model_id: str,
    model_revision: str,
    template_version: str,
    rationales: list[str],
    payload: dict[str, Any],
    build_seconds: float,
) -> UserContext:
    """Store a freshly built context; if a concurrent worker stored the same version first, keep theirs."""
    row = {
        "user_id": user_id,
        "references_hash": references_hash,
        "reference_count": reference_count,
        "backend": backend,
        "model_id": model_id,
        "model_revision": model_revision,
        "template_version": template_version,
        "status": ContextStatus.ready,
        "rationales": rationales,
        "payload": payload,
        "build_seconds": build_seconds,
    }
    insert_ignore(session, UserContext, [row], _VERSION_COLUMNS)
    stmt = select(UserContext).where(*[getattr(UserContext, c) == row[c] for c in _VERSION_COLUMNS])
    return session.exec(stmt).one()


def latest_context(*, session: Session, user_id: int) -> UserContext | None:
    """The user's most recently built context, whatever its versions (what the API and viewer show)."""
    stmt = select(UserContext).where(UserContext.user_id == user_id).order_by(col(UserContext.id).desc())
    return session.exec(stmt).first()
