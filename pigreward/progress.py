"""Progress on stderr (stdout stays clean for pipes and tests), and waiting on ledger rows."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from tqdm import tqdm

from core.enums import FINISHED_RUNS, TERMINAL_STATUSES
from models.db import session_scope
from models.judgments import status_counts
from models.optimization import get_run
from models.tables import OptimizationRun

HINT_AFTER_S = 5.0  # no progress for this long: say why, if no worker consumes the queue
HINT_EVERY_S = 60.0


class StallHint:
    """Calls `why()` once progress has stalled for HINT_AFTER_S (then every HINT_EVERY_S) and prints
    its line, so waiting on a queue no worker consumes is never silent."""

    def __init__(
        self, why: Callable[[], str | None] | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.why, self.clock = why, clock
        self.last_progress = clock()
        self.last_hint = float("-inf")
        self.seen: object = None

    def tick(self, state: object) -> None:
        now = self.clock()
        if state != self.seen:
            self.seen, self.last_progress = state, now
            return
        if self.why is None or now - self.last_progress < HINT_AFTER_S or now - self.last_hint < HINT_EVERY_S:
            return
        self.last_hint = now
        try:
            line = self.why()
        except Exception as exc:  # noqa: BLE001 - a hint must never stop the wait
            line = f"(cannot tell why nothing moves: {type(exc).__name__}: {exc})"
        if line:
            tqdm.write(f"waiting: {line}", file=sys.stderr)


def bar(total: int, desc: str, enabled: bool = True, unit: str = "it") -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def wait_for_judgments(
    engine: Engine,
    ids: Sequence[int],
    *,
    desc: str = "judging",
    progress: bool = True,
    timeout_s: float = 3600.0,
    poll_s: float = 0.25,
    stalled: Callable[[], str | None] | None = None,
) -> dict[str, int]:
    """Block until every judgment in `ids` reached a terminal status; counts by status.

    Reads the ledger, not Celery results, so it works with any broker and any number of workers.
    `stalled` says why nothing moves (e.g. no worker consumes the queue), printed after a few seconds.
    """
    deadline = time.monotonic() + timeout_s
    hint = StallHint(stalled)
    with bar(len(ids), desc, progress, unit="judgment") as pbar:
        while True:
            with session_scope(engine) as session:
                counts = status_counts(session=session, ids=ids)
            hint.tick(tuple(sorted(counts.items())))
            finished = sum(n for status, n in counts.items() if status in TERMINAL_STATUSES)
            pbar.update(finished - pbar.n)
            pbar.set_postfix({k: v for k, v in sorted(counts.items())}, refresh=False)
            if finished >= len(ids):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(ids) - finished} of {len(ids)} judgments unfinished after {timeout_s}s"
                )
            time.sleep(poll_s)


def wait_for_run(
    db: Engine,
    run_id: int,
    *,
    on_round: Callable[[int], object] | None = None,
    poll_s: float = 0.25,
    timeout_s: float = 24 * 3600.0,
    stalled: Callable[[], str | None] | None = None,
) -> OptimizationRun:
    """Block until an optimization run is done or failed; its row. `on_round(rounds_done)` as it goes;
    `stalled` says why nothing moves, printed after a few seconds."""
    deadline = time.monotonic() + timeout_s
    hint = StallHint(stalled)
    while True:
        with session_scope(db) as session:
            run = get_run(session=session, run_id=run_id)
        if run is None:
            raise LookupError(f"no optimization run {run_id}")
        hint.tick((run.status, run.rounds_done))
        if on_round:
            on_round(run.rounds_done)
        if run.status in FINISHED_RUNS:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"optimization {run_id} unfinished after {timeout_s}s ({run.status})")
        time.sleep(poll_s)
