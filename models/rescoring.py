"""Re-scoring: replaced verdicts kept as history, and the runs that replace them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.enums import RESCORABLE, JudgmentStatus, RunStatus
from models.judgments import VERDICT_COLUMNS, dimensions_of
from models.tables import Judgment, JudgmentHistory, RescoreRun, UserContext, utcnow
from models.upsert import insert_ignore


def ensure_run(*, session: Session, run_key: str, params: dict[str, Any]) -> RescoreRun:
    insert_ignore(
        session,
        RescoreRun,
        [
            {
                "run_key": run_key,
                "status": RunStatus.running,
                "requeued": 0,
                "by_reason": {},
                "params": params,
                "created_at": utcnow(),
            }
        ],
        ["run_key"],
    )
    return session.exec(select(RescoreRun).where(RescoreRun.run_key == run_key)).one()


def follow_up_run(*, session: Session, run_key: str, params: dict[str, Any]) -> RescoreRun:
    """The first `<run_key>+N` (N = 2, 3, ...) that is not finished: where newly stale rows of a night
    whose run already finished are re-scored (a crashed follow-up is resumed, like any run)."""
    n = 2
    while True:
        run = ensure_run(session=session, run_key=f"{run_key}+{n}", params=params)
        if run.status != RunStatus.done:
            return run
        n += 1


def count_requeued(*, session: Session, run_id: int, reasons: Sequence[str]) -> None:
    """Add judgments re-queued by this run (one reason each) to its totals."""
    run = session.get(RescoreRun, run_id)
    if run is None:
        raise LookupError(f"re-scoring run {run_id} does not exist")
    merged = Counter(run.by_reason)
    merged.update(reasons)
    run.requeued += len(reasons)
    run.by_reason = dict(merged)
    session.add(run)


def finish_rescore_run(*, session: Session, run_id: int) -> RescoreRun:
    """Mark the run done: a later run with the same key adds nothing."""
    run = session.get(RescoreRun, run_id)
    if run is None:
        raise LookupError(f"re-scoring run {run_id} does not exist")
    run.status = RunStatus.done
    run.finished_at = utcnow()
    session.add(run)
    return run


def candidates(
    *, session: Session, after_id: int, limit: int, since: datetime | None = None
) -> list[tuple[Judgment, UserContext | None]]:
    """Finished judgments (with the context they used), in id order from `after_id`."""
    stmt = (
        select(Judgment, UserContext)
        .join(UserContext, col(UserContext.id) == col(Judgment.context_id), isouter=True)
        .where(col(Judgment.status).in_(sorted(RESCORABLE)), col(Judgment.id) > after_id)
        .order_by(col(Judgment.id))
        .limit(limit)
    )
    if since is not None:
        stmt = stmt.where(col(Judgment.finished_at) >= since)
    return [(j, c) for j, c in session.exec(stmt)]


def archive_and_requeue(*, session: Session, judgment_id: int, reason: str, run_id: int | None) -> bool:
    """Keep the current verdict as history and put the judgment back in the queue (once)."""
    row = session.get(Judgment, judgment_id, with_for_update=session.get_bind().dialect.name == "postgresql")
    if row is None or row.status not in RESCORABLE:
        return False
    snapshot: dict[str, Any] = {column: getattr(row, column) for column in VERDICT_COLUMNS}
    snapshot["finished_at"] = row.finished_at.isoformat() if row.finished_at else None
    snapshot["dimensions"] = [
        {"name": d.name, "score_a": d.score_a, "score_b": d.score_b, "reason": d.reason}
        for d in dimensions_of(session=session, judgment_id=judgment_id)
    ]
    session.add(JudgmentHistory(judgment_id=judgment_id, run_id=run_id, reason=reason, snapshot=snapshot))
    session.execute(
        sa.update(Judgment)
        .where(col(Judgment.id) == judgment_id)
        .values(
            status=JudgmentStatus.queued,
            attempts=0,
            claim_token=None,
            flagged_at=None,
            started_at=None,
            finished_at=None,
            error=None,
            error_code=None,
            # the archived verdict's confidence goes with it: a re-score that fails must not keep it
            confidence=None,
            confidence_raw=None,
            calibration_version=None,
            confidence_signals=None,
            queue="bulk",  # re-scoring sends its chunks there
            queued_at=utcnow(),
        )
    )
    return True


def flag_judgment(*, session: Session, judgment_id: int) -> Judgment | None:
    row = session.get(Judgment, judgment_id)
    if row is not None:
        row.flagged_at = utcnow()
        session.add(row)
    return row


def history_of(*, session: Session, judgment_id: int) -> list[JudgmentHistory]:
    stmt = (
        select(JudgmentHistory)
        .where(JudgmentHistory.judgment_id == judgment_id)
        .order_by(col(JudgmentHistory.id))
    )
    return list(session.exec(stmt))
