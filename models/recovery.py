"""What the sweeper reads and writes: rows that need a message again, and the sweeper's own lease.

Three kinds of row need a message the broker does not hold for them: `waiting` rows whose retry is
due, `running` rows whose holder stopped renewing its heartbeat (a dead or wedged worker), and
`queued` rows whose message the broker lost. Each query pages by id so any backlog size is handled.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core.enums import JudgmentStatus
from models.db import affected
from models.tables import Judgment, ReconcileState, utcnow
from models.upsert import insert_ignore

DEFAULT_QUEUE = "judge"
"""Rows recorded before queues were recorded on them went to `judge`."""


def _queue_of_row() -> sa.ColumnElement[str]:
    return func.coalesce(col(Judgment.queue), DEFAULT_QUEUE)


def due_waiting(*, session: Session, now: datetime, after_id: int = 0, limit: int = 500) -> list[int]:
    """Waiting rows whose retry time has come, in id order from `after_id`."""
    stmt = (
        select(Judgment.id)
        .where(
            col(Judgment.status) == JudgmentStatus.waiting,
            col(Judgment.retry_at) <= now,
            col(Judgment.id) > after_id,
        )
        .order_by(col(Judgment.id))
        .limit(limit)
    )
    return [i for i in session.exec(stmt) if i is not None]


def fail_expired_waiting(*, session: Session, horizon_s: float) -> int:
    """Waiting rows whose transient errors began before the horizon end `failed` (the last error kept)."""
    now = utcnow()
    result = session.execute(
        sa.update(Judgment)
        .where(
            col(Judgment.status) == JudgmentStatus.waiting,
            col(Judgment.waiting_since) < now - timedelta(seconds=horizon_s),
        )
        .values(
            status=JudgmentStatus.failed,
            error=sa.literal(f"transient errors for more than {horizon_s / 3600:g} h; last: ")
            + func.coalesce(col(Judgment.error), ""),
            finished_at=now,
            retry_at=None,
        )
    )
    return affected(result)


def abandoned(*, session: Session, lease_s: float, after_id: int = 0, limit: int = 500) -> list[int]:
    """Running rows nobody renewed within the lease (the holder died, or gave up without a word)."""
    stale = utcnow() - timedelta(seconds=lease_s)
    stmt = (
        select(Judgment.id)
        .where(
            col(Judgment.status) == JudgmentStatus.running,
            sa.or_(
                col(Judgment.heartbeat_at) < stale,
                sa.and_(
                    col(Judgment.heartbeat_at).is_(None),
                    sa.or_(col(Judgment.started_at).is_(None), col(Judgment.started_at) < stale),
                ),
            ),
            col(Judgment.id) > after_id,
        )
        .order_by(col(Judgment.id))
        .limit(limit)
    )
    return [i for i in session.exec(stmt) if i is not None]


def queued_queues(*, session: Session) -> dict[str, int]:
    """How many rows are queued per queue (where their messages should be)."""
    stmt = (
        select(Judgment.queue, func.count())
        .where(col(Judgment.status) == JudgmentStatus.queued)
        .group_by(col(Judgment.queue))
    )
    counts: dict[str, int] = {}
    for queue, n in session.exec(stmt):
        counts[queue or DEFAULT_QUEUE] = counts.get(queue or DEFAULT_QUEUE, 0) + int(n)
    return counts


def queued_before(
    *, session: Session, before: datetime, queue: str | None = None, after_id: int = 0, limit: int = 500
) -> list[int]:
    """Queued rows that became queued before `before` (in `queue`, or any), in id order."""
    stmt = select(Judgment.id).where(
        col(Judgment.status) == JudgmentStatus.queued,
        func.coalesce(col(Judgment.queued_at), col(Judgment.created_at)) < before,
        col(Judgment.id) > after_id,
    )
    if queue is not None:
        stmt = stmt.where(_queue_of_row() == queue)
    return [i for i in session.exec(stmt.order_by(col(Judgment.id)).limit(limit)) if i is not None]


def requeue(
    *, session: Session, judgment_ids: Collection[int], from_status: JudgmentStatus
) -> dict[str, list[int]]:
    """Put rows back to `queued` (only those still in `from_status`); the ids taken, by their queue.

    The streak of transient errors (`waiting_since`) is kept, so the retry horizon counts from its start.
    """
    if not judgment_ids:
        return {}
    ids = sorted(judgment_ids)
    where = (col(Judgment.id).in_(ids), col(Judgment.status) == from_status)
    rows = session.exec(select(Judgment.id, _queue_of_row()).where(*where)).all()
    session.execute(
        sa.update(Judgment)
        .where(*where)
        .values(status=JudgmentStatus.queued, claim_token=None, retry_at=None, queued_at=utcnow())
    )
    by_queue: dict[str, list[int]] = {}
    for jid, queue in rows:
        if jid is not None:
            by_queue.setdefault(str(queue), []).append(jid)
    return by_queue


def queues_of(*, session: Session, judgment_ids: Collection[int]) -> dict[str, list[int]]:
    """The given rows grouped by the queue their messages go to."""
    rows = session.exec(
        select(Judgment.id, _queue_of_row()).where(col(Judgment.id).in_(sorted(judgment_ids)))
    )
    by_queue: dict[str, list[int]] = {}
    for jid, queue in rows:
        if jid is not None:
            by_queue.setdefault(str(queue), []).append(jid)
    return by_queue


# -- the sweeper's lease --------------------------------------------------------------------------


def take_sweep(*, session: Session, holder: str, lease_s: float) -> ReconcileState | None:
    """The sweeper's state, if `holder` may sweep now (nobody else holds an unexpired lease)."""
    now = utcnow()
    insert_ignore(session, ReconcileState, [{"id": 1}], ["id"])
    taken = affected(
        session.execute(
            sa.update(ReconcileState)
            .where(
                col(ReconcileState.id) == 1,
                sa.or_(
                    col(ReconcileState.locked_until).is_(None),
                    col(ReconcileState.locked_until) < now,
                    col(ReconcileState.holder) == holder,
                ),
            )
            .values(holder=holder, locked_until=now + timedelta(seconds=lease_s))
        )
    )
    if not taken:
        return None
    return session.get(ReconcileState, 1, populate_existing=True)


def end_sweep(*, session: Session, holder: str, broker_epoch: str, resent: dict[str, int]) -> None:
    """Record the sweep's end (its broker epoch, what it re-sent) and give the lease back."""
    state = session.get(ReconcileState, 1, with_for_update=session.get_bind().dialect.name == "postgresql")
    if state is None or state.holder != holder:
        return
    totals = dict(state.resent)
    for reason, n in resent.items():
        totals[reason] = totals.get(reason, 0) + n
    state.last_run_at, state.locked_until, state.broker_epoch = utcnow(), None, broker_epoch
    state.sweeps += 1
    state.resent = totals
    session.add(state)


def release_sweep(*, session: Session, holder: str) -> None:
    """Give the lease back after a failed sweep, so another worker's sweeper need not wait it out."""
    session.execute(
        sa.update(ReconcileState)
        .where(col(ReconcileState.id) == 1, col(ReconcileState.holder) == holder)
        .values(locked_until=None)
    )


def sweep_totals(*, session: Session) -> ReconcileState | None:
    """How many sweeps ran and what they re-sent, by reason, since the database was created."""
    return session.get(ReconcileState, 1)
