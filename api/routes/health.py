"""Liveness and readiness."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StateDep
from tasks import app as celery_app
from tasks.app import QUEUES
from tasks.broker import no_consumer_hint, waiting_without_consumer

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: StateDep) -> JSONResponse:
    """The database and the broker are reachable (503 with the failing part otherwise); queues whose
    messages no worker consumes are named (`waiting_without_consumer`, a `warning` line)."""
    checks: dict[str, str] = {}
    try:
        with state.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", **checks}
    if checks["broker"] == "ok":  # work that would wait forever: messages no worker consumes
        try:
            waiting = waiting_without_consumer(celery_app, QUEUES)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            waiting, body["queues"] = {}, f"unknown: {type(exc).__name__}"
        if waiting:
            body["waiting_without_consumer"] = waiting
            body["warning"] = no_consumer_hint(waiting)
    return JSONResponse(body, status_code=200 if ready else 503)
