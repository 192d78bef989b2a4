"""Judge tasks. Each reads as the pipeline: ledger row → run → summary; the logic is in workers/.

`judge.delay(user, prompt, image_a, image_b, options)` writes the ledger row (status `queued`) in
the caller's process before the message is sent, so the database always knows what was asked for;
re-sending the same arguments finds the same row (natural key) and adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Task

from models.db import session_scope
from models.ledger import JudgmentSpec, record_judgments
from pigreward.settings import get_settings
from tasks.app import app
from tasks.runtime import get_resources
from workers.errors import TransientError
from workers.pipeline import record_failure, run_judgment

log = logging.getLogger(__name__)


def spec_from_call(
    user: str,
    prompt: str,
    image_a: str,
    image_b: str,
    options: dict[str, Any] | None = None,
    tenant: str | None = None,
    batch_id: int | None = None,
) -> JudgmentSpec:
    """The ledger spec of a judge call; `options` may carry `backend` and `swap`."""
    settings = get_settings()
    opts = dict(options or {})
    backend = str(opts.pop("backend", settings.backend))
    return JudgmentSpec(
        tenant=tenant or settings.default_tenant,
        user=user,
        prompt=prompt,
        image_a=image_a,
        image_b=image_b,
        backend=backend,
        options=opts,
        batch_id=batch_id,
    )


def record(specs: Sequence[JudgmentSpec]) -> list[int]:
    """Write ledger rows for `specs` (idempotent); their ids, in order."""
    with session_scope(get_resources().engine) as session:
        return record_judgments(session=session, specs=specs)


class LedgerTask(Task):
    """A judge task whose `apply_async` writes the ledger row first and sends its id along."""

    autoretry_for = (TransientError,)
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True

    def apply_async(self, args=None, kwargs=None, **options):  # type: ignore[no-untyped-def,override]
        kwargs = dict(kwargs or {})
        if "judgment_id" not in kwargs:  # first send (retries already carry the id)
            call = dict(zip(("user", "prompt", "image_a", "image_b", "options"), args or (), strict=False))
            call.update(kwargs)
            [judgment_id] = record([spec_from_call(**call)])
            kwargs = {**call, "judgment_id": judgment_id}
            args = ()
        return super().apply_async(args=args, kwargs=kwargs, **options)

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
        """Retries exhausted (or an unexpected error): the reason goes on the ledger row."""
        judgment_id = (kwargs or {}).get("judgment_id")
        if judgment_id is not None:
            code = getattr(exc, "code", "internal_error")
            record_failure(
                engine=get_resources().engine,
                judgment_id=judgment_id,
                code=code,
                message=f"{type(exc).__name__}: {exc}",
            )


@app.task(
    bind=True,
    base=LedgerTask,
    name="pigreward.judge",
    max_retries=get_settings().max_retries,
)
def judge(
    self: Task,
    user: str | None = None,
    prompt: str | None = None,
    image_a: str | None = None,
    image_b: str | None = None,
    options: dict[str, Any] | None = None,
    tenant: str | None = None,
    batch_id: int | None = None,
    judgment_id: int | None = None,
) -> dict[str, Any]:
    """Judge which of two images the user prefers; returns the ledger summary."""
    if judgment_id is None:  # sent without our apply_async (e.g. send_task): record it here
        [judgment_id] = record([spec_from_call(user, prompt, image_a, image_b, options, tenant, batch_id)])  # type: ignore[arg-type]
    return run_judgment(res=get_resources(), judgment_id=judgment_id).model_dump()


@app.task(bind=True, name="pigreward.judge_chunk", max_retries=0)
def judge_chunk(self: Task, judgment_ids: list[int]) -> dict[str, int]:
    """The bulk form: many ledger rows in one message. Transient failures go back as single judge tasks."""
    res = get_resources()
    counts: dict[str, int] = {}
    for judgment_id in judgment_ids:
        try:
            status = run_judgment(res=res, judgment_id=judgment_id).status
        except TransientError as exc:
            log.warning("judgment %s: %s; re-queued on its own", judgment_id, exc)
            judge.apply_async(kwargs={"judgment_id": judgment_id}, countdown=2)
            status = "requeued"
        except Exception:  # recorded as failed by the pipeline; the rest of the chunk goes on
            status = "failed"
        counts[status] = counts.get(status, 0) + 1
    return counts


def submit_judgments(
    specs: Sequence[JudgmentSpec], *, chunk_size: int = 1, queue: str | None = None
) -> list[int]:
    """Ledger rows for all specs in one transaction, then the messages; returns the judgment ids.

    `chunk_size` 1 sends one `judge` task per judgment; larger sends `judge_chunk` tasks (queue `bulk`
    unless `queue` says otherwise).
    """
    ids = record(specs)
    if chunk_size <= 1:
        for judgment_id in ids:
            judge.apply_async(kwargs={"judgment_id": judgment_id}, **({"queue": queue} if queue else {}))
    else:
        for start in range(0, len(ids), chunk_size):
            judge_chunk.apply_async(
                args=(ids[start : start + chunk_size],), **({"queue": queue} if queue else {})
            )
    return ids
