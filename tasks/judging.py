"""Judge tasks. Each reads as the pipeline: ledger row → run → summary; the logic is in workers/.

`judge.delay(user, prompt, image_a, image_b, options)` writes the ledger row (status `queued`) in
the caller's process before the message is sent, so the database always knows what was asked for;
re-sending the same arguments finds the same row (natural key) and adds nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from models.db import session_scope
from models.ledger import JudgmentSpec, record_batch, record_judgments, release_judgment, stale_judgments
from pigreward.settings import get_settings
from tasks.app import app
from tasks.runtime import get_resources
from workers.backends import LVLM_BACKENDS
from workers.errors import PigrewardError, TransientError
from workers.pipeline import Resources, record_failure, run_judgment

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
    # both orders by default on LVLM backends (position bias); explicit, so it is part of the key
    opts.setdefault("swap", settings.swap if settings.swap is not None else backend in LVLM_BACKENDS)
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
        call = inspect.signature(self.run).bind(*(args or ()), **(kwargs or {})).arguments
        if call.get("judgment_id") is None:  # first send (retries and re-sends carry the id)
            [judgment_id] = record([spec_from_call(**call)])
            call = {**call, "judgment_id": judgment_id}
        return super().apply_async(args=(), kwargs=call, **options)

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
        """Retries exhausted (or an unexpected error): the reason goes on the ledger row."""
        judgment_id = (kwargs or {}).get("judgment_id")
        if judgment_id is not None:
            record_failure(
                engine=get_resources().engine,
                judgment_id=judgment_id,
                code=exc.code if isinstance(exc, PigrewardError) else "internal_error",
                message=f"{type(exc).__name__}: {exc}",
                token=task_id,
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
    return run_judgment(res=get_resources(), judgment_id=judgment_id, token=self.request.id).model_dump()


@app.task(bind=True, name="pigreward.judge_chunk", max_retries=0)
def judge_chunk(self: Task, judgment_ids: list[int]) -> dict[str, int]:
    """The bulk form: many ledger rows in one message, run `chunk_concurrency` at a time.

    The fan-out keeps an LVLM server busy (SGLang batches whatever is in flight). One bad row never
    stops the chunk: permanent errors are recorded by the pipeline; a row that hits a transient error
    is released and re-sent as its own `judge` task, and so are rows not started when the soft time
    limit strikes.
    """
    res = get_resources()

    def one(judgment_id: int) -> str:
        token = f"{self.request.id}:{judgment_id}"
        try:
            return run_judgment(res=res, judgment_id=judgment_id, token=token).status
        except TransientError as exc:
            log.warning("judgment %s: %s; re-sent on its own", judgment_id, exc)
            _resend(res, [judgment_id], token)
            return "requeued"
        except Exception:  # recorded as failed by the pipeline; the rest of the chunk goes on
            return "failed"

    counts: dict[str, int] = {}
    workers = max(1, min(get_settings().chunk_concurrency, len(judgment_ids)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
    futures = {pool.submit(one, jid): jid for jid in judgment_ids}
    try:
        for future in as_completed(futures):
            status = future.result()
            counts[status] = counts.get(status, 0) + 1
    except SoftTimeLimitExceeded:
        not_started = [jid for f, jid in futures.items() if f.cancel()]
        _resend(res, not_started, None)
        counts["requeued"] = counts.get("requeued", 0) + len(not_started)
        log.warning("chunk %s: soft time limit, %d judgments re-sent", self.request.id, len(not_started))
    finally:
        pool.shutdown(wait=True)
    return counts


def _resend(res: Resources, judgment_ids: Sequence[int], token: str | None) -> None:
    for judgment_id in judgment_ids:
        if token is not None:
            with session_scope(res.engine) as session:
                release_judgment(session=session, judgment_id=judgment_id, token=token)
        judge.apply_async(kwargs={"judgment_id": judgment_id}, countdown=2)


@app.task(bind=True, name="pigreward.reconcile", max_retries=0)
def reconcile(self: Task, queued_for_s: float | None = None) -> dict[str, int]:
    """Re-send judgments whose message may be lost (queued too long, or running past the lease).

    Duplicates are harmless: a claim lets only one message run a row. Scheduled by beat.
    """
    settings = get_settings()
    res = get_resources()
    with session_scope(res.engine) as session:
        ids = stale_judgments(
            session=session,
            queued_for_s=settings.visibility_timeout_s if queued_for_s is None else queued_for_s,
            lease_s=res.lease_s,
        )
    for judgment_id in ids:
        judge.apply_async(kwargs={"judgment_id": judgment_id})
    if ids:
        log.warning("reconcile: re-sent %d stale judgments", len(ids))
    return {"resent": len(ids)}


def submit_judgments(
    specs: Sequence[JudgmentSpec], *, chunk_size: int = 1, queue: str | None = None
) -> list[int]:
    """Ledger rows for all specs in one transaction, then the messages; returns the judgment ids.

    `chunk_size` 1 sends one `judge` task per judgment; larger sends `judge_chunk` tasks (queue `bulk`
    unless `queue` says otherwise).
    """
    ids = record(specs)
    distinct = list(dict.fromkeys(ids))  # the same spec twice is one judgment, one message
    if chunk_size <= 1:
        for judgment_id in distinct:
            judge.apply_async(kwargs={"judgment_id": judgment_id}, **({"queue": queue} if queue else {}))
    else:
        for start in range(0, len(distinct), chunk_size):
            judge_chunk.apply_async(
                args=(distinct[start : start + chunk_size],), **({"queue": queue} if queue else {})
            )
    return ids


def submit_batch(
    *, tenant: str, name: str, specs: Sequence[JudgmentSpec], chunk_size: int = 50, kind: str = "judge"
) -> tuple[int, list[int]]:
    """A batch of judgments: batch + ledger rows in one transaction, then chunk messages on `bulk`."""
    with session_scope(get_resources().engine) as session:
        batch, ids = record_batch(session=session, tenant=tenant, name=name, specs=specs, kind=kind)
        batch_id: int = batch.id  # type: ignore[assignment]
    distinct = list(dict.fromkeys(ids))
    for start in range(0, len(distinct), chunk_size):
        judge_chunk.apply_async(args=(distinct[start : start + chunk_size],))
    return batch_id, ids
