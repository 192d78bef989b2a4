"""The sweeper: finds ledger rows that need a message again and sends one, without touching a healthy backlog.

The ledger is the source of truth and messages are only transport, so every way a message can go
missing is found from the ledger, with the broker asked only what it holds:

- a **waiting** row (transient trouble) whose retry is due is re-queued and sent;
- a **running** row whose holder stopped renewing its heartbeat for the claim lease (the worker
  died, or gave up without being able to write) is re-queued and sent; right after a gap in
  sweeping (the database was down, so nobody could renew) this waits one sweep, so live workers
  renew first;
- **queued** rows whose message the broker lost: a sentinel message in a queue nobody consumes
  proves the broker kept its messages; when it is gone (a broker restarted empty) every queued row
  is sent again. A queued row is also sent again when its queue is empty (depth 0, so its message
  is in nobody's hands) and it has been queued for two sweep intervals. While a queue holds
  messages, its queued rows are a backlog and are left alone.
- waiting rows past the retry horizon end `failed` with their last error.

One sweep runs at a time per deployment (a lease on the `reconcile_state` row); every worker
process runs the loop, so sweeping needs no extra process and goes on while any worker lives.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.enums import JudgmentStatus
from models.db import session_scope
from models.recovery import (
    abandoned,
    due_waiting,
    end_sweep,
    fail_expired_waiting,
    queued_before,
    queued_queues,
    release_sweep,
    requeue,
    take_sweep,
)
from models.tables import utcnow

log = logging.getLogger(__name__)


class Broker(Protocol):
    """What the sweeper asks of the broker (tasks/ implements it over Celery's connection)."""

    def depth(self, queue: str) -> int:
        """Messages ready in `queue` (not counting those delivered to workers); 0 if it does not exist."""
        ...

    def sentinel_present(self) -> bool:
        """The sentinel message is still there: the broker kept its messages since it was planted."""
        ...

    def plant_sentinel(self, epoch: str) -> None: ...

    def send(self, queue: str, judgment_ids: Sequence[int]) -> None:
        """Messages for these (committed, queued) rows to `queue`."""
        ...


@dataclass(frozen=True)
class Backoff:
    """How long a row waits after its n-th transient failure in a row: doubling from `base_s` to
    `max_s`, with jitter so rows that failed together do not all come back together. Units: seconds.

    The cap bounds how long after an outage a waiting row is tried again; the horizon how long
    transient errors may last before the row is failed."""

    base_s: float = 5.0
    max_s: float = 30.0
    horizon_s: float = 24 * 3600.0

    def delay(self, failures: int) -> float:
        step = min(self.max_s, self.base_s * 2 ** max(0, failures - 1))
        return random.uniform(0.5 * step, step)


@dataclass(frozen=True)
class RecoveryConfig:
    """How often to sweep and how long silence means death. Units: seconds."""

    interval_s: float = 15.0
    lease_s: float = 60.0  # a claim whose heartbeat is older is presumed dead
    horizon_s: float = 24 * 3600.0  # waiting rows are failed after transient errors lasting this long
    page: int = 500

    @property
    def stranded_after_s(self) -> float:
        """A queued row with an empty queue is re-sent only after this (its message may be in flight)."""
        return 2 * self.interval_s


@dataclass
class SweepReport:
    resent: dict[str, int] = field(default_factory=dict)  # by reason
    failed_past_horizon: int = 0
    skipped: str | None = None  # why nothing was done (another sweeper holds the lease)

    def add(self, reason: str, n: int) -> None:
        if n:
            self.resent[reason] = self.resent.get(reason, 0) + n

    @property
    def total(self) -> int:
        return sum(self.resent.values())


def sweep(*, db: Engine, broker: Broker, holder: str, config: RecoveryConfig) -> SweepReport:
    """One sweep (see the module docstring); database or broker errors propagate to the caller."""
    report = SweepReport()
    with session_scope(db) as session:
        state = take_sweep(session=session, holder=holder, lease_s=max(60.0, 4 * config.interval_s))
        if state is None:
            report.skipped = "another sweeper holds the lease"
            return report
        last_run, epoch = state.last_run_at, state.broker_epoch
    try:
        _sweep(db, broker, holder, config, report, last_run, epoch)
    except BaseException:
        with suppress(Exception), session_scope(db) as session:  # best effort: the lease expires anyway
            release_sweep(session=session, holder=holder)
        raise
    return report


def _sweep(
    db: Engine,
    broker: Broker,
    holder: str,
    config: RecoveryConfig,
    report: SweepReport,
    last_run: datetime | None,
    epoch: str | None,
) -> None:
    now = utcnow()
    with session_scope(db) as session:
        report.failed_past_horizon = fail_expired_waiting(session=session, horizon_s=config.horizon_s)
    if report.failed_past_horizon:
        log.warning(
            "%d waiting judgments passed the retry horizon and are failed", report.failed_past_horizon
        )
    epoch = _check_broker(db, broker, epoch, config, report)
    _resend_pages(db, broker, config, report, "waiting_due", JudgmentStatus.waiting, _due(now))
    if _swept_recently(last_run, now, config):
        _resend_pages(db, broker, config, report, "abandoned", JudgmentStatus.running, _abandoned(config))
    _resend_stranded(db, broker, config, report, now)
    with session_scope(db) as session:
        end_sweep(session=session, holder=holder, broker_epoch=epoch, resent=report.resent)
    if report.total:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report.resent.items()))
        log.warning("reconcile: re-sent %d judgments (%s)", report.total, reasons)


def _swept_recently(last_run: datetime | None, now: datetime, config: RecoveryConfig) -> bool:
    """False right after a gap (the database was down): workers get one interval to renew first."""
    if last_run is None:
        return False
    if last_run.tzinfo is None:  # SQLite hands back naive UTC timestamps
        last_run = last_run.replace(tzinfo=UTC)
    return now - last_run <= timedelta(seconds=3 * config.interval_s)


def _check_broker(
    db: Engine, broker: Broker, epoch: str | None, config: RecoveryConfig, report: SweepReport
) -> str:
    """The epoch whose sentinel the broker holds; every queued row is re-sent if the broker lost it."""
    if epoch is not None and broker.sentinel_present():
        return epoch
    if epoch is not None:
        log.warning("the broker lost its messages (restarted empty?): every queued judgment is sent again")
        _resend_pages(db, broker, config, report, "broker_lost", JudgmentStatus.queued, _queued(utcnow()))
    fresh = uuid.uuid4().hex
    broker.plant_sentinel(fresh)
    return fresh


Finder = Callable[[Session, int, int], list[int]]
"""(session, after id, page size) -> the next page of row ids to re-send."""


def _due(now: datetime) -> Finder:
    return lambda session, after, limit: due_waiting(session=session, now=now, after_id=after, limit=limit)


def _abandoned(config: RecoveryConfig) -> Finder:
    return lambda session, after, limit: abandoned(
        session=session, lease_s=config.lease_s, after_id=after, limit=limit
    )


def _queued(before: datetime, queue: str | None = None) -> Finder:
    return lambda session, after, limit: queued_before(
        session=session, before=before, queue=queue, after_id=after, limit=limit
    )


def _resend_pages(
    db: Engine,
    broker: Broker,
    config: RecoveryConfig,
    report: SweepReport,
    reason: str,
    status: JudgmentStatus,
    find: Finder,
) -> None:
    """Page through the rows `find` names: re-queue each page (committed), then send its messages."""
    after = 0
    while True:
        with session_scope(db) as session:
            ids = find(session, after, config.page)
            by_queue = requeue(session=session, judgment_ids=ids, from_status=status) if ids else {}
        if not ids:
            return
        for queue, queue_ids in by_queue.items():
            broker.send(queue, queue_ids)
            report.add(reason, len(queue_ids))
        after = ids[-1]


def _resend_stranded(
    db: Engine, broker: Broker, config: RecoveryConfig, report: SweepReport, now: datetime
) -> None:
    """Queued rows of an empty queue, queued for longer than a message takes to be picked up."""
    with session_scope(db) as session:
        queues = queued_queues(session=session)
    before = now - timedelta(seconds=config.stranded_after_s)
    for queue in sorted(queues):
        if broker.depth(queue) == 0:
            _resend_pages(
                db, broker, config, report, "stranded", JudgmentStatus.queued, _queued(before, queue)
            )
