"""The rows this process runs right now, and the heartbeat that keeps their claims alive.

A claim is alive while its holder renews `heartbeat_at`; the sweeper takes back rows whose heartbeat
is older than the lease. Only rows a run is working on are renewed: a run that ends without being
able to write its outcome (the database was down) stops renewing, so its row is found again.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable

from sqlalchemy.engine import Engine

from models.claims import renew_claims
from models.db import session_scope


def worker_identity() -> str:
    """host:pid:boot, unique per process (a reused pid after a restart is a different worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ActiveClaims:
    """Thread-safe set of the judgment ids this process holds and is running."""

    def __init__(self, worker: str | None = None) -> None:
        self.worker = worker or worker_identity()
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def add(self, judgment_ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.update(judgment_ids)

    def discard(self, judgment_id: int) -> None:
        with self._lock:
            self._ids.discard(judgment_id)

    def snapshot(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)


def renew(db: Engine, claims: ActiveClaims) -> int:
    """One heartbeat: renew every claim this process is running; how many rows were renewed."""
    ids = claims.snapshot()
    if not ids:
        return 0
    with session_scope(db) as session:
        return renew_claims(session=session, worker=claims.worker, judgment_ids=ids)
