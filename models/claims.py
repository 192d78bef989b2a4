"""Claims on ledger rows: who runs a judgment now, proven alive by heartbeats, and how a run ends
when it cannot finish (a rejection, a failure, or a transient error that makes the row wait).

A worker claims a row before running it (the claim token is the Celery task id, so a redelivered
message takes its own row back) and renews `heartbeat_at` while it runs it. A row whose heartbeat is
older than the lease is held by nobody alive: another message may take it over, and the sweeper
(`workers.recovery`) puts it back in the queue. Only the holder of the claim may write the result.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.enums import JudgmentStatus
from models.db import affected
from models.tables import Judgment, utcnow


class ClaimLost(Exception):
    """The row was taken over (its holder looked dead) or finished by someone else: drop this result."""


def _locks(session: Session) -> bool:
    """Row locks where the database has them (Postgres); SQLite serializes writers anyway."""
    return session.get_bind().dialect.name == "postgresql"


_TABLE: sa.Table = Judgment.__table__  # type: ignore[attr-defined]  # not declared by SQLModel
_NOW = sa.bindparam("now", type_=sa.DateTime(timezone=True))


def _claimable_clause() -> sa.ColumnElement[bool]:
    """Queued or waiting rows, and running rows held under :token or by a holder silent since :stale."""
    c = _TABLE.c
    return sa.or_(
        c.status.in_([JudgmentStatus.queued, JudgmentStatus.waiting]),
        sa.and_(
            c.status == JudgmentStatus.running,
            sa.or_(
                c.claim_token == sa.bindparam("token"),
                c.heartbeat_at < sa.bindparam("stale", type_=sa.DateTime(timezone=True)),
                sa.and_(
                    c.heartbeat_at.is_(None),
                    sa.or_(
                        c.started_at.is_(None),
                        c.started_at < sa.bindparam("stale", type_=sa.DateTime(timezone=True)),
                    ),
                ),
            ),
        ),
    )


# The claim statements are built once, with bind parameters: a claim runs for every judgment, and
# building the expression costs more Python than executing it (compiled forms are cached either way).
_RUNS = _TABLE.c.attempts - _TABLE.c.transient_failures  # runs that ended without a word
_CLAIM = (
    sa.update(_TABLE)
    .where(
        _TABLE.c.id == sa.bindparam("judgment_id"), _claimable_clause(), sa.bindparam("max_attempts") > _RUNS
    )
    .values(
        status=JudgmentStatus.running,
        attempts=_TABLE.c.attempts + 1,
        started_at=_NOW,
        claim_token=sa.bindparam("token"),
        claimed_by=sa.bindparam("worker"),
        heartbeat_at=_NOW,
        retry_at=None,
    )
)
_EXHAUSTED = (
    sa.update(_TABLE)
    .where(
        _TABLE.c.id == sa.bindparam("judgment_id"), _claimable_clause(), sa.bindparam("max_attempts") <= _RUNS
    )
    .values(
        status=JudgmentStatus.failed,
        error_code="attempts_exhausted",
        error=sa.bindparam("error"),
        finished_at=_NOW,
        claim_token=None,
    )
)
_RESERVE = (
    sa.update(_TABLE)
    .where(_TABLE.c.id.in_(sa.bindparam("ids", expanding=True)), _claimable_clause())
    .values(
        status=JudgmentStatus.running,
        claim_token=sa.bindparam("token"),
        claimed_by=sa.bindparam("worker"),
        heartbeat_at=_NOW,
    )
)


@dataclass(frozen=True)
class ClaimedJudgment:
    """What a run needs of the row it claimed, read by the claiming UPDATE itself (RETURNING).

    Only these columns: reading back the whole row (43 columns, four of them JSON) cost more CPU
    than the rest of the claim.
    """

    id: int
    tenant_id: int
    user_ref: str
    user_id: int | None
    prompt: str
    image_a_uri: str
    image_b_uri: str
    backend: str
    options: dict[str, Any]
    swap: bool
    status: JudgmentStatus  # running: this run holds it
    attempts: int  # runs started, this one included
    transient_failures: int
    created_at: datetime | None
    started_at: datetime | None  # this run's start (SQLite hands timestamps back naive, in UTC)


_CLAIMED_COLUMNS = [_TABLE.c[f.name] for f in fields(ClaimedJudgment)]
_CLAIM_RETURNING = _CLAIM.returning(*_CLAIMED_COLUMNS)
_RESERVE_RETURNING = _RESERVE.returning(_TABLE.c.id)


def claim_judgment(
    *, session: Session, judgment_id: int, token: str, lease_s: float, max_attempts: int, worker: str = ""
) -> ClaimedJudgment | None:
    """Take a judgment to run it; None if it is finished, unknown, or held by a live claim.

    Two different messages for one row can never run it at the same time. A row started
    `max_attempts` times without any recorded outcome (transient failures are recorded, crashes
    are not) is failed: a crash loop must end. What the run needs of the row is read by the
    claiming UPDATE itself where the database can (one round trip).
    """
    now = utcnow()
    params = {
        "judgment_id": judgment_id,
        "token": token,
        "stale": now - timedelta(seconds=lease_s),
        "max_attempts": max_attempts,
        "worker": worker,
        "now": now,
    }
    if session.get_bind().dialect.update_returning:  # Postgres, SQLite >= 3.35: one round trip
        taken = session.execute(_CLAIM_RETURNING, params).first()
        if taken is not None:
            return ClaimedJudgment(*taken)
    elif affected(session.execute(_CLAIM, params)) == 1:
        row = session.get(Judgment, judgment_id, populate_existing=True)
        if row is not None:
            return ClaimedJudgment(*(getattr(row, f.name) for f in fields(ClaimedJudgment)))
    error = f"started {max_attempts} times without finishing (worker crashes or time limits?)"
    session.execute(_EXHAUSTED, {**params, "error": error})
    return None


def reserve_judgments(
    *, session: Session, judgment_ids: Collection[int], token: str, lease_s: float, worker: str
) -> list[int]:
    """Claim the rows of a chunk before running them one by one (a run counts when it starts).

    A chunk's rows are then held by a live worker while they wait their turn: if the worker dies,
    the sweeper finds them by their heartbeat, whatever else the broker holds. Returns the ids taken.
    """
    if not judgment_ids:
        return []
    now = utcnow()
    params = {
        "ids": sorted(judgment_ids),
        "token": token,
        "stale": now - timedelta(seconds=lease_s),
        "worker": worker,
        "now": now,
    }
    if session.get_bind().dialect.update_returning:
        return sorted(session.scalars(_RESERVE_RETURNING, params))
    session.execute(_RESERVE, params)
    taken = select(Judgment.id).where(
        col(Judgment.id).in_(sorted(judgment_ids)), Judgment.claim_token == token
    )
    return sorted(i for i in session.exec(taken) if i is not None)


def renew_claims(*, session: Session, worker: str, judgment_ids: Collection[int]) -> int:
    """The heartbeat: this worker still runs these rows. Rows it no longer holds are left alone."""
    if not judgment_ids:
        return 0
    return affected(
        session.execute(
            sa.update(Judgment)
            .where(
                col(Judgment.id).in_(sorted(judgment_ids)),
                col(Judgment.claimed_by) == worker,
                col(Judgment.status) == JudgmentStatus.running,
            )
            .values(heartbeat_at=utcnow())
        )
    )


def held(session: Session, judgment_id: int, token: str | None) -> Judgment:
    """The row, locked, if `token` still holds it (any state with no token); `ClaimLost` otherwise."""
    row = session.get(Judgment, judgment_id, with_for_update=_locks(session), populate_existing=True)
    if row is None:
        raise LookupError(f"judgment {judgment_id} does not exist")
    if token is not None and (row.status != JudgmentStatus.running or row.claim_token != token):
        raise ClaimLost(f"judgment {judgment_id} is {row.status} under another claim")
    return row


def close_with_error(
    *,
    session: Session,
    judgment_id: int,
    status: JudgmentStatus,
    code: str,
    message: str,
    token: str | None = None,
) -> bool:
    """Record a rejection (bad input) or failure on the row; False if another claim holds it."""
    try:
        row = held(session, judgment_id, token)
    except (LookupError, ClaimLost):
        return False
    row.status = status
    row.error_code = code
    row.error = message
    row.confidence = row.confidence_raw = row.calibration_version = row.confidence_signals = None
    row.claim_token = None
    row.finished_at = utcnow()
    row.retry_at = None
    session.add(row)
    session.flush()
    return True


def park_judgment(
    *,
    session: Session,
    judgment_id: int,
    token: str,
    code: str,
    message: str,
    retry_in_s: float,
    horizon_s: float,
) -> JudgmentStatus | None:
    """A run ended in a transient error: the row waits `retry_in_s`, or is failed once its transient
    errors have lasted past `horizon_s`. The last error stays on the row. None if the claim is lost.
    """
    try:
        row = held(session, judgment_id, token)
    except (LookupError, ClaimLost):
        return None
    now = utcnow()
    since = row.waiting_since or now
    if since.tzinfo is None:  # SQLite hands back naive UTC timestamps
        since = since.replace(tzinfo=now.tzinfo)
    row.claim_token = None
    row.error_code = code
    row.transient_failures += 1
    if (now - since).total_seconds() > horizon_s:
        hours = horizon_s / 3600
        row.status = JudgmentStatus.failed
        row.error = (
            f"transient errors for more than {hours:g} h (since {since:%Y-%m-%d %H:%M} UTC); last: {message}"
        )
        row.finished_at = now
        row.retry_at = None
    else:
        row.status = JudgmentStatus.waiting
        row.error = message
        row.waiting_since = since
        row.retry_at = now + timedelta(seconds=retry_in_s)
    session.add(row)
    session.flush()
    return row.status


def release_judgment(*, session: Session, judgment_id: int, token: str) -> bool:
    """Give a claimed row back to `queued` (it will be re-sent)."""
    result = session.execute(
        sa.update(Judgment)
        .where(
            col(Judgment.id) == judgment_id,
            col(Judgment.status) == JudgmentStatus.running,
            col(Judgment.claim_token) == token,
        )
        .values(status=JudgmentStatus.queued, claim_token=None, queued_at=utcnow())
    )
    return affected(result) == 1


def release_claim(*, session: Session, judgment_id: int) -> bool:
    """Free a running row whatever its token (a claim known to be dead); True if it was running.

    The accuracy harness uses it on rows a killed earlier run of its own in-process worker left
    running: no other process could hold them, so there is no token to check.
    """
    result = session.execute(
        sa.update(Judgment)
        .where(col(Judgment.id) == judgment_id, col(Judgment.status) == JudgmentStatus.running)
        .values(status=JudgmentStatus.queued, claim_token=None, queued_at=utcnow())
    )
    return affected(result) == 1
