"""The embedded default: a Celery worker thread inside the calling process (kombu's memory:// broker).

The solo pool is used on purpose: with the in-memory transport a threads pool can deadlock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import start_worker

from tasks.app import QUEUES


@contextmanager
def embedded_worker(app: Celery, queues: Sequence[str] = QUEUES) -> Iterator[None]:
    """Run a worker for `queues` in a background thread for the duration of the block."""
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=60.0,
        queues=list(queues),
    ):
        yield
