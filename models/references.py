"""Reference pairs: (prompt, chosen, rejected) of one user, the raw material of their context."""

from __future__ import annotations

from sqlmodel import Session, col, select

from models.tables import EndUser, ReferencePair
from models.upsert import insert_ignore, natural_key


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


def tenant_reference(*, session: Session, tenant_id: int, reference_id: int) -> ReferencePair | None:
    """A reference pair if it belongs to a user of this tenant (another tenant's is as missing)."""
    stmt = (
        select(ReferencePair)
        .join(EndUser, col(EndUser.id) == col(ReferencePair.user_id))
        .where(ReferencePair.id == reference_id, EndUser.tenant_id == tenant_id)
    )
    return session.exec(stmt).first()


def remove_reference(*, session: Session, user_id: int, reference_id: int) -> ReferencePair | None:
    """Delete one of the user's pairs; the removed row, or None if the user has no such pair.

    Contexts are keyed by a hash of the user's pairs, so the next context built or looked up for
    this user is one without it: a context built from the removed pair is never used again.
    """
    row = session.get(ReferencePair, reference_id)
    if row is None or row.user_id != user_id:
        return None
    session.delete(row)
    session.flush()
    return row
