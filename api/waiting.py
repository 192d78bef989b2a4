"""Why a batch is not moving: its queue holds messages no worker consumes.

Reading progress is how an API client waits, so a batch still unfinished a few seconds after it was
submitted carries a `warning` naming the queue and what to start. Asking the workers costs a broadcast
round trip (up to a second), so the answer is kept for CACHE_S per API process and never asked while
a batch is young or finished.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from core.settings import get_settings
from tasks import app as celery_app
from tasks.broker import no_consumer_hint, waiting_without_consumer

WARN_AFTER_S = 5.0  # a batch younger than this is not called stuck
CACHE_S = 10.0


class QueueWatch:
    """`no_consumer_hint` for a queue, cached for CACHE_S. One request at a time asks the broker;
    others meanwhile get the cached answer (None at first) instead of waiting on it, so a slow or
    unreachable broker never holds batch reads up. Errors give no warning (a read never fails)."""

    def __init__(self) -> None:
        self._asking = threading.Lock()
        self._cached: dict[str, tuple[float, str | None]] = {}

    def hint(self, queue: str) -> str | None:
        cached = self._cached.get(queue)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        if not self._asking.acquire(blocking=False):
            return cached[1] if cached else None
        try:
            try:
                line = no_consumer_hint(waiting_without_consumer(celery_app, [queue]))
            except Exception:  # noqa: BLE001 - broker trouble is /readyz's to report
                line = None
            self._cached[queue] = (time.monotonic(), line)
            return line
        finally:
            self._asking.release()


WATCH = QueueWatch()


def batch_warning(*, created_at: datetime, finished: bool, queue: str = "bulk") -> str | None:
    """The line an unfinished batch shows after WARN_AFTER_S when nobody consumes its queue."""
    if finished or get_settings().embedded_broker:  # embedded: this process's worker consumes every queue
        return None
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    if (datetime.now(UTC) - created).total_seconds() < WARN_AFTER_S:
        return None
    return WATCH.hint(queue)
