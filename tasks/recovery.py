"""The sweeper loop of a worker: recovery that needs no beat, no operator and no extra process.

Every worker main process sweeps every `reconcile_interval_s` (one sweep at a time per deployment,
by a lease in the database): due retries, dead claims, messages the broker lost
(`workers.recovery`). Claims stay alive by the heartbeat each process runs (`tasks.runtime`).
"""

from __future__ import annotations

from celery.signals import worker_ready, worker_shutdown

from core.settings import get_settings
from tasks.app import app
from tasks.broker import CeleryBroker
from tasks.loops import STOP, Loop
from tasks.runtime import get_db
from workers.claims import worker_identity
from workers.pipeline import database_errors
from workers.recovery import RecoveryConfig, SweepReport, sweep


def recovery_config() -> RecoveryConfig:
    settings = get_settings()
    return RecoveryConfig(
        interval_s=settings.reconcile_interval_s,
        lease_s=settings.claim_lease_s,
        horizon_s=settings.retry_horizon_s,
    )


def sweep_once(holder: str | None = None) -> SweepReport:
    """One sweep now (the `reconcile` task and `pigreward reconcile` call this)."""
    with database_errors():
        return sweep(
            db=get_db(),
            broker=CeleryBroker(app),
            holder=holder or worker_identity(),
            config=recovery_config(),
        )


def start_sweeper() -> None:
    """Sweep from this process every `reconcile_interval_s` (a worker main process calls this)."""
    holder = worker_identity()
    Loop("reconcile", lambda: get_settings().reconcile_interval_s, lambda: sweep_once(holder)).start()


@worker_ready.connect
def _sweep_from_workers(**_: object) -> None:
    if get_settings().embedded_broker:  # one process holds everything: nothing can be lost between them
        return
    start_sweeper()


@worker_shutdown.connect
def _stop_loops(**_: object) -> None:
    STOP.set()
