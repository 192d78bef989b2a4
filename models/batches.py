"""Batches: many judgments submitted together (API batches, demo, nightly runs), their progress and cancel."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core.enums import TERMINAL_STATUSES, JudgmentStatus
from models.db import affected
from models.judgments import JudgmentSpec, record_judgments
from models.tables import Batch, BatchItem, Judgment, id_of, utcnow
from models.tenants import ensure_tenant


def create_batch(*, session: Session, tenant: str, name: str, kind: str = "judge", total: int = 0) -> Batch:
    tenant_row = ensure_tenant(session=session, name=tenant)
    batch = Batch(tenant_id=id_of(tenant_row), name=name, kind=kind, total=total)
    session.add(batch)
    session.flush()
    return batch


def record_batch(
    *,
    session: Session,
    tenant: str,
    name: str,
    specs: Sequence[JudgmentSpec],
    kind: str = "judge",
    queue: str | None = None,
) -> tuple[Batch, list[int]]:
    """A batch and its ledger rows in one transaction; returns the batch and the ids in order."""
    batch = create_batch(session=session, tenant=tenant, name=name, kind=kind, total=len(specs))
    ids = record_judgments(
        session=session, specs=[s.model_copy(update={"batch_id": batch.id}) for s in specs], queue=queue
    )
    items = [{"batch_id": batch.id, "position": i, "judgment_id": jid} for i, jid in enumerate(ids)]
    for start in range(0, len(items), 1000):
        session.execute(sa.insert(BatchItem), items[start : start + 1000])
    return batch, ids


def batch_judgment_ids(*, session: Session, batch_id: int) -> list[int]:
    stmt = (
        select(BatchItem.judgment_id).where(BatchItem.batch_id == batch_id).order_by(col(BatchItem.position))
    )
    return list(session.exec(stmt))


def batch_counts(*, session: Session, batch_id: int) -> dict[str, int]:
    """Counts by status of the distinct judgments a batch asked for."""
    ids = select(BatchItem.judgment_id).where(BatchItem.batch_id == batch_id)
    stmt = select(Judgment.status, func.count()).where(col(Judgment.id).in_(ids)).group_by(Judgment.status)
    return {status: n for status, n in session.exec(stmt)}


def cancel_batch(*, session: Session, batch_id: int) -> int:
    """Cancel what no worker has taken yet; running and finished rows are left alone."""
    batch = session.get(Batch, batch_id)
    if batch is not None and batch.cancelled_at is None:
        batch.cancelled_at = utcnow()
        session.add(batch)
    ids = select(BatchItem.judgment_id).where(BatchItem.batch_id == batch_id)
    result = session.execute(
        sa.update(Judgment)
        .where(col(Judgment.id).in_(ids), col(Judgment.status) == JudgmentStatus.queued)
        .values(
            status=JudgmentStatus.cancelled,
            finished_at=utcnow(),
            error_code="cancelled",
            error="batch cancelled",
        )
    )
    return affected(result)


def get_batch(*, session: Session, tenant_id: int, batch_id: int) -> Batch | None:
    """The batch if it exists and belongs to the tenant (another tenant's batch is as missing)."""
    batch = session.get(Batch, batch_id)
    return batch if batch is not None and batch.tenant_id == tenant_id else None


def is_finished(counts: dict[str, int]) -> bool:
    """Every judgment of the batch reached a terminal status."""
    return sum(n for status, n in counts.items() if status in TERMINAL_STATUSES) == sum(counts.values())


def batch_judgments(*, session: Session, batch_id: int, limit: int = 200) -> list[Judgment]:
    """The first `limit` judgments a batch asked for, by id (what the viewer lists)."""
    ids = batch_judgment_ids(session=session, batch_id=batch_id)[:limit]
    return list(session.exec(select(Judgment).where(col(Judgment.id).in_(ids)).order_by(col(Judgment.id))))
