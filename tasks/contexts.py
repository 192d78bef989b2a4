"""Bootstrap-context task: build (or find) a user's context C_u ahead of their judgments.

`bootstrap_context.delay(user)` sends the user's name: a context's row is written by the worker,
because its version (the reasoner model and revision, the template) is known only where the backend
runs. Building is idempotent: a context for the current references and versions is found, not redone.
"""

from __future__ import annotations

from typing import Any

from core.errors import PermanentError
from core.settings import get_settings
from tasks.app import app
from tasks.judgments import PigrewardTask
from tasks.runtime import get_resources
from workers.pipeline import ensure_context, resolve_user


@app.task(bind=True, base=PigrewardTask, name="pigreward.bootstrap_context")
def bootstrap_context(
    self: PigrewardTask,
    user: str,
    tenant: str | None = None,
    backend: str | None = None,
    protocol: str | None = None,
) -> dict[str, Any]:
    """Build the user's context for the current references and backend version (idempotent)."""
    settings = get_settings()
    res = get_resources()
    try:
        end_user = resolve_user(db=res.db, tenant=tenant or settings.default_tenant, user=user)
        assert end_user.id is not None
        row, data = ensure_context(
            res=res, backend=res.backend_for(backend or settings.backend, protocol), user_id=end_user.id
        )
    except PermanentError as exc:
        return {"user": user, "status": "rejected", "error_code": exc.code, "error": exc.message}
    return {
        "user": user,
        "status": "ready",
        "context_id": row.id,
        "references": row.reference_count,
        "rationales": len(data.rationales),
        # leave-one-out accuracy on the user's own references (None: not computed, see context_quality)
        "quality": (row.quality or {}).get("accuracy"),
        "flagged_rationales": (row.quality or {}).get("flagged", []),
    }
