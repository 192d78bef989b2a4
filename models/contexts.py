"""Versioned user contexts (C_u): looked up by the exact versions they were built with."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.enums import ContextStatus
from models.tables import ReferencePair, UserContext
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


class ReferenceInput(NamedTuple):
    """One reference pair as a context is built from it."""

    id: int
    prompt: str
    chosen_uri: str
    rejected_uri: str


_REFS: sa.Table = ReferencePair.__table__  # type: ignore[attr-defined]  # not declared by SQLModel
_REFERENCE_INPUTS = (
    sa.select(_REFS.c.user_id, _REFS.c.id, _REFS.c.prompt, _REFS.c.chosen_uri, _REFS.c.rejected_uri)
    .where(_REFS.c.user_id.in_(sa.bindparam("user_ids", expanding=True)))
    .order_by(_REFS.c.user_id, _REFS.c.id)
)


def reference_inputs(*, session: Session, user_ids: Collection[int]) -> dict[int, list[ReferenceInput]]:
    """Each user's reference pairs in id order (the order a context version hashes them), for many
    users in one query: a chunk of judgments looks all its users up at once. Users without any are
    absent."""
    found: dict[int, list[ReferenceInput]] = {}
    if not user_ids:
        return found
    for user_id, *ref in session.execute(_REFERENCE_INPUTS, {"user_ids": sorted(user_ids)}):
        found.setdefault(user_id, []).append(ReferenceInput(*ref))
    return found


def ready_contexts(
    *, session: Session, user_ids: Collection[int], references_hashes: Collection[str]
) -> list[UserContext]:
    """The ready contexts of these users built from any of these reference hashes (every version)."""
    if not user_ids:
        return []
    stmt = select(UserContext).where(
        col(UserContext.user_id).in_(sorted(user_ids)),
        col(UserContext.references_hash).in_(sorted(references_hashes)),
        UserContext.status == ContextStatus.ready,
    )
    return list(session.exec(stmt))


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
    quality: dict[str, Any] | None = None,
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
        "quality": quality,
    }
    insert_ignore(session, UserContext, [row], _VERSION_COLUMNS)
    stmt = select(UserContext).where(*[getattr(UserContext, c) == row[c] for c in _VERSION_COLUMNS])
    return session.exec(stmt).one()


def latest_context(*, session: Session, user_id: int) -> UserContext | None:
    """The user's most recently built context, whatever its versions (what the API and viewer show)."""
    stmt = select(UserContext).where(UserContext.user_id == user_id).order_by(col(UserContext.id).desc())
    return session.exec(stmt).first()
