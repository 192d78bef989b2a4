"""What the ledger says about a benchmark run's judgments: when they are all finished, and their rows.

The benchmarks time judgments by the ledger's own timestamps (created, started, finished) rather
than by when this process notices, so polling speed does not show in the figures.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

TERMINAL = ("done", "invalid", "rejected", "failed", "cancelled")


def _terminal_count(first_id: int, last_id: int) -> int:
    import sqlalchemy as sa

    from tasks.runtime import get_db

    query = sa.text(
        "SELECT count(*) FROM judgment WHERE id BETWEEN :a AND :b AND status IN :terminal"
    ).bindparams(sa.bindparam("terminal", expanding=True))
    with get_db().connect() as conn:
        return int(
            conn.execute(query, {"a": first_id, "b": last_id, "terminal": list(TERMINAL)}).scalar() or 0
        )


def wait_terminal(first_id: int, last_id: int, n: int, timeout_s: float) -> None:
    """Until `n` judgments with ids in [first_id, last_id] are terminal, with a progress bar."""
    from pigreward.progress import bar

    deadline = time.monotonic() + timeout_s
    with bar(n, "judging", unit="judgment") as pbar:
        while True:
            finished = _terminal_count(first_id, last_id)
            pbar.update(finished - pbar.n)
            if finished >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n - finished} of {n} judgments unfinished after {timeout_s}s")
            time.sleep(0.5)


def ledger_stats(first_id: int, last_id: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The judgments with ids in [first_id, last_id] (status, timestamps, timings) and a count by status."""
    import sqlalchemy as sa

    from tasks.runtime import get_db

    with get_db().connect() as conn:
        result = conn.execute(
            sa.text(
                "SELECT status, created_at, started_at, finished_at, timings FROM judgment "
                "WHERE id BETWEEN :a AND :b"
            ),
            {"a": first_id, "b": last_id},
        ).mappings()
        rows = [dict(r) for r in result]
    return rows, dict(Counter(r["status"] for r in rows))
