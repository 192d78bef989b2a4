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
) -> dict[str, int]:
    """Block until every judgment in `ids` reached a terminal status; counts by status.

    Reads the ledger, not Celery results, so it works with any broker and any number of workers.
    """
    deadline = time.monotonic() + timeout_s
    with bar(len(ids), desc, progress, unit="judgment") as pbar:
        while True:
            with session_scope(engine) as session:
                counts = status_counts(session=session, ids=ids)
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
) -> OptimizationRun:
    """Block until an optimization run is done or failed; its row. `on_round(rounds_done)` as it goes."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(db) as session:
            run = get_run(session=session, run_id=run_id)
        if run is None:
            raise LookupError(f"no optimization run {run_id}")
        if on_round:
            on_round(run.rounds_done)
        if run.status in FINISHED_RUNS:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"optimization {run_id} unfinished after {timeout_s}s ({run.status})")
        time.sleep(poll_s)
