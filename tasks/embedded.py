"""The embedded default: a Celery worker thread inside the calling process (kombu's memory:// broker).

The solo pool is used on purpose: with the in-memory transport a threads pool can deadlock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import start_worker

from core.settings import get_settings
from tasks.app import QUEUES, app


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


@contextmanager
def worker_if_embedded(needed: bool = True) -> Iterator[None]:
    """An in-process worker for the block when the broker is memory:// (the embedded default); with a
    real broker the deployment's workers do the work and this does nothing."""
    if needed and get_settings().embedded_broker:
        with embedded_worker(app):
            yield
    else:
        yield
