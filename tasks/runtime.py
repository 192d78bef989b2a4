"""What one process holds for tasks: its database engine, and for workers the `Resources` of the work
(with the heartbeat that keeps the claims it runs alive).

Celery creates one task object per process; the database pool, the S3 client and the backends are
made lazily here, on first use, and reused, never at import time (so forking pools and the CLI stay
cheap). A process that only submits (`tasks.judge.delay` in a client) makes only the database engine.
The API builds its own (`api.deps`) and never imports this module.
"""

from __future__ import annotations

import threading

from celery.signals import worker_process_init
from sqlalchemy.engine import Engine

from core.settings import get_settings
from models.db import make_engine
from tasks import metrics
from tasks.config import backend_config, image_loader
from tasks.loops import Loop
from workers.backends import Backend, create_backend
from workers.claims import renew
from workers.pipeline import Resources, database_errors
from workers.recovery import Backoff
from workers.trust import CalibrationBook

_lock = threading.Lock()
_db: Engine | None = None
_resources: Resources | None = None
_backends: dict[str, Backend] = {}  # by 'name/protocol'
_heartbeat: Loop | None = None


def get_db() -> Engine:
    """This process's database engine (pool), built from settings on first use."""
    global _db
    with _lock:
        if _db is None:
            _db = make_engine(get_settings().resolved_database_url)
        return _db


def backend_for(name: str, protocol: str | None = None) -> Backend:
    """One instance of each (backend, protocol) per process, configured from settings."""
    key = f"{name}/{protocol or ''}"
    with _lock:
        if key not in _backends:
            _backends[key] = create_backend(name, backend_config(get_settings(), protocol))
        return _backends[key]


def get_resources() -> Resources:
    """What a worker process hands to workers/: database, image loader, backends, limits."""
    global _resources
    db = get_db()
    with _lock:
        if _resources is None:
            settings = get_settings()
            _resources = Resources(
                db=db,
                loader=image_loader(settings),
                backend_for=backend_for,
                lease_s=settings.claim_lease_s,
                max_attempts=settings.max_attempts,
                backoff=Backoff(
                    settings.retry_backoff_s, settings.retry_backoff_max_s, settings.retry_horizon_s
                ),
                events=metrics.OBSERVER,
                context_quality=settings.context_quality,
                calibrations=CalibrationBook(settings.calibration_refresh_s),
            )
            _start_heartbeat(_resources)
        return _resources


def _start_heartbeat(res: Resources) -> None:
    """This process renews the claims it runs from now on (every `claim_lease_s / 6`)."""
    global _heartbeat
    if _heartbeat is None or not _heartbeat.alive():

        def beat() -> None:
            with database_errors():
                renew(res.db, res.claims)

        _heartbeat = Loop("claims heartbeat", lambda: get_settings().claim_lease_s / 6, beat).start()


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    """A forked pool child must not share the parent's database sockets."""
    reset_resources(close=False)


def reset_resources(close: bool = True) -> None:
    """Drop everything (tests and CLI commands that change settings; forked children)."""
    global _db, _resources
    with _lock:
        if _db is not None:
            _db.dispose(close=close)
        _db = None
        _resources = None
        for backend in _backends.values():
            backend.close()
        _backends.clear()
