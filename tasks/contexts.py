"""Bootstrap-context task: build (or find) a user's context C_u ahead of their judgments."""

from __future__ import annotations

from typing import Any

from celery import Task

from pigreward.settings import get_settings
from tasks.app import app
from tasks.runtime import get_resources
from workers.errors import PermanentError, TransientError
from workers.pipeline import ensure_context, resolve_user


@app.task(
    bind=True,
    name="pigreward.bootstrap_context",
    autoretry_for=(TransientError,),
    retry_backoff=2,
    retry_jitter=True,
    max_retries=get_settings().max_retries,
)
def bootstrap_context(
    self: Task, user: str, tenant: str | None = None, backend: str | None = None, protocol: str | None = None
) -> dict[str, Any]:
    """Build the user's context for the current references and backend version (idempotent)."""
    settings = get_settings()
    res = get_resources()
    try:
        end_user = resolve_user(engine=res.engine, tenant=tenant or settings.default_tenant, user=user)
        row, data = ensure_context(
            res=res,
            backend=res.backend_for(backend or settings.backend, protocol),
            user_id=end_user.id,  # type: ignore[arg-type]
        )
    except PermanentError as exc:
        return {"user": user, "status": "rejected", "error_code": exc.code, "error": exc.message}
    return {
        "user": user,
        "status": "ready",
        "context_id": row.id,
        "references": row.reference_count,
        "rationales": len(data.rationales),
    }
