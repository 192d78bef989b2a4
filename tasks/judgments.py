"""Judge tasks. Each reads as the pipeline: ledger row → run → summary; the logic is in workers/.

`judge.delay(user, prompt, image_a, image_b, options)` goes through `tasks.submit`: the ledger row
(status `queued`) is committed in the caller's process, then a message carrying only its id is sent,
so the database always knows what was asked for; the same arguments again find the same row
(natural key) and add nothing. Messages carry `judgment_id` and nothing else.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, ClassVar

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult

from core.enums import JudgmentStatus
from core.errors import DatabaseUnavailable, PigrewardError, TransientError
from core.settings import get_settings
from models.claims import release_judgment, reserve_judgments
from models.db import session_scope
from tasks.app import app
from tasks.recovery import sweep_once
from tasks.runtime import get_resources
from tasks.submit import judgment_spec, send_judgments, submit_judgment
from workers.pipeline import (
    ContextMemo,
    Resources,
    chunk_contexts,
    database_errors,
    record_failure,
    run_judgment,
)

log = logging.getLogger(__name__)


class PigrewardTask(Task[Any, Any]):
    """Transient errors retried with exponential backoff and jitter, as many times as settings say."""

    autoretry_for: tuple[type[BaseException], ...] = (TransientError,)
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True
    _max_retries: int | None = None

    @property
    def max_retries(self) -> int | None:
        """Read from the app's configuration when a retry happens (not fixed when the module is imported)."""
        if self._max_retries is not None:
            return self._max_retries
        return int(self.app.conf.get("pigreward_max_retries", 5))

    @max_retries.setter
    def max_retries(self, value: int | None) -> None:
        self._max_retries = value

    def claim_token(self) -> str:
        """This run's claim on its ledger row: the Celery task id (kept by retries and redeliveries)."""
        return self.request.id or f"direct-{uuid.uuid4()}"


class LedgerTask(PigrewardTask):
    """A task called with what the user asks for and run with the id of the ledger row recording it.

    `delay(...)` / `apply_async(args, kwargs)` with the documented arguments go through `submit`
    (row committed, then a message carrying only `row_arg`); Celery's own sends (retries,
    redeliveries) and ours carry that id alone and pass straight through.
    """

    row_arg: ClassVar[str] = "judgment_id"

    def apply_async(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        passthrough = {"task_id": task_id, "producer": producer, "link": link, "link_error": link_error}
        options.update({k: v for k, v in passthrough.items() if v is not None})
        if shadow is not None:
            options["shadow"] = shadow
        if not args and kwargs is not None and set(kwargs) == {self.row_arg}:
            return super().apply_async(args, kwargs, **options)
        return self.submit(*(args or ()), **(kwargs or {}), send_options=options)

    def submit(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        """Record the row for the documented call, then send its message (`send_options=` for Celery)."""
        raise NotImplementedError


class JudgeTask(LedgerTask):
    def submit(
        self,
        user: str,
        prompt: str,
        image_a: str,
        image_b: str,
        options: dict[str, Any] | None = None,
        tenant: str | None = None,
        batch_id: int | None = None,
        *,
        send_options: dict[str, Any],
    ) -> AsyncResult[Any]:
        spec = judgment_spec(user, prompt, image_a, image_b, options, tenant, batch_id)
        return submit_judgment(spec, **send_options)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """An unexpected error escaped the run: the reason goes on the ledger row, if it can be written.

        Never raises: bookkeeping that cannot reach the database must not hold the worker's slot; the
        row is then found again by the sweeper (its claim stops being renewed).
        """
        judgment_id = (kwargs or {}).get("judgment_id")
        if judgment_id is None:
            return
        try:
            record_failure(
                db=get_resources().db,
                judgment_id=judgment_id,
                code=exc.code if isinstance(exc, PigrewardError) else "internal_error",
                message=f"{type(exc).__name__}: {exc}",
                token=task_id,
            )
        except Exception as bookkeeping:  # noqa: BLE001
            log.warning(
                "judgment %s: its failure could not be recorded (%s); the sweeper will retry it",
                judgment_id,
                bookkeeping,
            )


@app.task(bind=True, base=JudgeTask, name="pigreward.judge")
def judge(self: JudgeTask, judgment_id: int) -> dict[str, Any]:
    """Judge which of two images the user prefers; returns the ledger summary (`waiting` on transient trouble)."""
    res = get_resources()
    try:
        return run_judgment(res=res, judgment_id=judgment_id, token=self.claim_token()).model_dump()
    except DatabaseUnavailable as exc:
        return _unrecorded(res, judgment_id, exc)


def _unrecorded(res: Resources, judgment_id: int, exc: DatabaseUnavailable) -> dict[str, Any]:
    """The database could not be reached: the message is let go (the slot too) and the row stays as
    it was, to be sent again by the sweeper once the database answers."""
    res.outages.fault(exc)
    log.warning(
        "judgment %s: %s; its row stays as it is and is sent again once the database answers",
        judgment_id,
        exc.message,
    )
    return {"judgment_id": judgment_id, "status": "unknown", "error_code": exc.code, "error": exc.message}


@app.task(bind=True, name="pigreward.judge_chunk", max_retries=0)
def judge_chunk(self: Task[Any, Any], judgment_ids: list[int]) -> dict[str, int]:
    """The bulk form: many ledger rows in one message, run `chunk_concurrency` at a time.

    The chunk first claims all its rows (so a worker that dies mid-chunk leaves rows the sweeper finds
    by their silent claims) and looks up its users' contexts together, then fans out: the fan-out
    keeps an LVLM server busy (SGLang batches whatever is in flight). One bad row never stops the
    chunk: permanent errors are recorded, transient ones make their row wait. Rows still unstarted
    when the soft time limit strikes are released and re-sent. Returns counts by the status each row
    was left in.
    """
    res = get_resources()
    token = self.request.id or f"chunk-{uuid.uuid4()}"
    try:
        with database_errors(), session_scope(res.db) as session:
            mine = reserve_judgments(
                session=session,
                judgment_ids=judgment_ids,
                token=token,
                lease_s=res.lease_s,
                worker=res.claims.worker,
            )
    except DatabaseUnavailable as exc:
        _unrecorded(res, judgment_ids[0] if judgment_ids else 0, exc)
        return {"unknown": len(judgment_ids)}
    res.claims.add(mine)
    try:  # one lookup of every user's context for the whole chunk
        contexts = chunk_contexts(res=res, judgment_ids=mine)
    except SoftTimeLimitExceeded:  # nothing started yet: every row goes back to the queue
        _release(res, mine, token)
        return {JudgmentStatus.queued: len(mine)}
    except Exception as exc:  # noqa: BLE001 - only a shortcut: each judgment looks its own up (and
        # meets the error itself: an outage makes it wait, anything else is recorded on its row)
        log.warning("chunk %s: contexts not looked up together (%s)", self.request.id, type(exc).__name__)
        contexts = ContextMemo()

    def one(judgment_id: int) -> str:
        try:
            return str(run_judgment(res=res, judgment_id=judgment_id, token=token, contexts=contexts).status)
        except DatabaseUnavailable as exc:
            return str(_unrecorded(res, judgment_id, exc)["status"])
        except Exception:  # recorded as failed by the pipeline; the rest of the chunk goes on
            return JudgmentStatus.failed
        finally:
            res.claims.discard(judgment_id)

    counts: dict[str, int] = {}
    if len(mine) < len(judgment_ids):
        counts["skipped"] = len(judgment_ids) - len(mine)
    workers = max(1, min(get_settings().chunk_concurrency, len(mine)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
    futures = {pool.submit(one, jid): jid for jid in mine}
    try:
        for future in as_completed(futures):
            status = future.result()
            counts[status] = counts.get(status, 0) + 1
    except SoftTimeLimitExceeded:
        not_started = [jid for f, jid in futures.items() if f.cancel()]
        _release(res, not_started, token)
        counts[JudgmentStatus.queued] = counts.get(JudgmentStatus.queued, 0) + len(not_started)
        log.warning("chunk %s: soft time limit, %d judgments re-sent", self.request.id, len(not_started))
    finally:
        pool.shutdown(wait=True)
    return counts


def _release(res: Resources, judgment_ids: Sequence[int], token: str) -> None:
    """Give claimed rows back to the queue, then send each its own message."""
    for judgment_id in judgment_ids:
        with session_scope(res.db) as session:
            release_judgment(session=session, judgment_id=judgment_id, token=token)
        res.claims.discard(judgment_id)
    send_judgments(judgment_ids)


@app.task(bind=True, name="pigreward.reconcile", max_retries=0)
def reconcile(self: Task[Any, Any]) -> dict[str, Any]:
    """One sweep now (workers sweep on their own every `reconcile_interval_s`; this is for operators)."""
    report = sweep_once()
    return {"resent": report.total, "by_reason": report.resent, "skipped": report.skipped}
