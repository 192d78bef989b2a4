"""End users: the people whose taste is modelled, known to their tenant by an external id."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from models.db import affected
from models.tables import (
    BatchItem,
    DimensionScore,
    EndUser,
    Judgment,
    JudgmentHistory,
    OptimizationCandidate,
    OptimizationPair,
    OptimizationRun,
    ReferencePair,
    UserContext,
)
from models.upsert import insert_ignore


def ensure_user(*, session: Session, tenant_id: int, external_id: str) -> EndUser:
    insert_ignore(
        session, EndUser, [{"tenant_id": tenant_id, "external_id": external_id}], ["tenant_id", "external_id"]
    )
    user = find_user(session=session, tenant_id=tenant_id, external_id=external_id)
    assert user is not None  # inserted above, or there already
    return user


def find_user(*, session: Session, tenant_id: int, external_id: str) -> EndUser | None:
    stmt = select(EndUser).where(EndUser.tenant_id == tenant_id, EndUser.external_id == external_id)
    return session.exec(stmt).first()


def list_users(*, session: Session, tenant_id: int, limit: int = 100, offset: int = 0) -> list[EndUser]:
    stmt = (
        select(EndUser)
        .where(EndUser.tenant_id == tenant_id)
        .order_by(col(EndUser.id))
        .limit(limit)
        .offset(offset)
    )
    return list(session.exec(stmt))


def user_counts(*, session: Session, user_id: int) -> tuple[int, int]:
    """(reference pairs, contexts) of a user."""
    refs = session.exec(select(func.count()).where(ReferencePair.user_id == user_id)).one()
    contexts = session.exec(select(func.count()).where(UserContext.user_id == user_id)).one()
    return refs, contexts


def delete_user(*, session: Session, tenant_id: int, external_id: str) -> dict[str, int] | None:
    """Delete a user and everything derived from them (privacy); counts by kind, None if unknown.

    Judgments are matched by user id and by the tenant's external id, so rows recorded before the
    user existed go too. Image content records are shared by hash and stay.
    """
    user = find_user(session=session, tenant_id=tenant_id, external_id=external_id)
    if user is None:
        return None
    mine = sa.or_(
        col(Judgment.user_id) == user.id,
        sa.and_(col(Judgment.tenant_id) == tenant_id, col(Judgment.user_ref) == external_id),
    )
    judgment_ids = select(Judgment.id).where(mine)
    session.execute(sa.delete(BatchItem).where(col(BatchItem.judgment_id).in_(judgment_ids)))
    session.execute(sa.delete(JudgmentHistory).where(col(JudgmentHistory.judgment_id).in_(judgment_ids)))
    runs = select(OptimizationRun.id).where(
        OptimizationRun.tenant_id == tenant_id, OptimizationRun.user_ref == external_id
    )
    session.execute(sa.delete(OptimizationPair).where(col(OptimizationPair.run_id).in_(runs)))
    session.execute(sa.delete(OptimizationCandidate).where(col(OptimizationCandidate.run_id).in_(runs)))

    def delete(stmt: sa.Delete) -> int:
        return affected(session.execute(stmt))

    optimization_runs = delete(sa.delete(OptimizationRun).where(col(OptimizationRun.id).in_(runs)))
    counts = {
        "dimension_scores": delete(
            sa.delete(DimensionScore).where(col(DimensionScore.judgment_id).in_(judgment_ids))
        ),
        "judgments": delete(sa.delete(Judgment).where(mine)),
        "contexts": delete(sa.delete(UserContext).where(col(UserContext.user_id) == user.id)),
        "references": delete(sa.delete(ReferencePair).where(col(ReferencePair.user_id) == user.id)),
    }
    counts["optimization_runs"] = optimization_runs
    session.delete(user)
    session.flush()
    return counts
