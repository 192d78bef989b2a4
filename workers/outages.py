"""What an operator reads while a dependency is down: a line when it starts failing, one when it is back.

Each judgment that hits the outage still gets its own WARNING line (which judgment, what happens
next); this adds the summary: the outage's start, and on recovery its length and how many runs it
cost. No tracebacks: the failures are expected, and their kind says all there is to say.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from core.errors import TransientError

log = logging.getLogger(__name__)

LABELS = {
    "store_unavailable": "the image store (S3 or disk)",
    "database_unavailable": "the database",
    "backend_unavailable": "the model server",
    "image_not_ready": "the external image generator",
}


@dataclass
class _Outage:
    since: float  # time.monotonic() of the first failure
    message: str
    runs: int = 1


class Outages:
    """Open outages of one process, by error code; thread-safe."""

    def __init__(self) -> None:
        self._open: dict[str, _Outage] = {}
        self._lock = threading.Lock()

    def fault(self, exc: TransientError) -> None:
        """A run failed on a dependency: the first failure opens an outage (and says so)."""
        with self._lock:
            outage = self._open.get(exc.code)
            if outage is not None:
                outage.runs += 1
                return
            self._open[exc.code] = _Outage(time.monotonic(), exc.message)
        log.warning(
            "%s is failing (%s): judgments wait and are retried; a line follows when it answers again",
            LABELS.get(exc.code, exc.code),
            exc.message,
        )

    def recovered(self) -> None:
        """A run went through: every open outage is over; each gets its summary line."""
        if not self._open:  # the common case, without the lock
            return
        with self._lock:
            ended, self._open = self._open, {}
        now = time.monotonic()
        for code, outage in sorted(ended.items()):
            log.warning(
                "%s is answering again after %.0f s; %d judgment runs hit it meanwhile (first error: %s)",
                LABELS.get(code, code),
                now - outage.since,
                outage.runs,
                outage.message,
            )

    def open(self) -> list[str]:
        with self._lock:
            return sorted(self._open)
