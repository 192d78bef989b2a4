"""The one way work enters the queue: ledger rows committed first, then messages that carry their ids.

The Python API (`tasks.judge.delay`), the REST API, the CLI, the bulk form, re-scoring and reconcile
all come through here, so the database always knows what was asked for before the broker does; a
message lost on the way is found again from the ledger (`reconcile`). Messages are sent by task name,
so this module needs no task object (the tasks call it from their own `delay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery.result import AsyncResult
from sqlmodel import Session

from core.requests import InvalidJudgmentRequest, validate_judgment
from core.settings import get_settings
from models.batches import record_batch
from models.db import session_scope
from models.judgments import JudgmentSpec, record_judgments
from models.optimization import create_run
from tasks.app import app
from tasks.runtime import get_db
from workers.backends import LVLM_BACKENDS

JUDGE = "pigreward.judge"
JUDGE_CHUNK = "pigreward.judge_chunk"
OPTIMIZE = "pigreward.optimize_prompt"


def judgment_spec(
    user: str,
    prompt: str,
    image_a: str,
    image_b: str,
    options: dict[str, Any] | None = None,
    tenant: str | None = None,
    batch_id: int | None = None,
) -> JudgmentSpec:
    """The ledger spec of a judge call; `options` may carry `backend`, `protocol` and `swap`.

    Checked first by the one request model (`core.requests`): a bad argument raises
    `InvalidJudgmentRequest` (a ValueError naming the field) before anything is recorded.
    Defaults are filled in here and become part of the natural key: the backend from settings, and
    `swap` on for LVLM backends (position bias), off for `lite`, unless settings or the call say.
    """
    settings = get_settings()
    request, tenant_name = validate_judgment(user, prompt, image_a, image_b, options, tenant)
    if batch_id is not None and (type(batch_id) is not int or batch_id < 1):
        raise InvalidJudgmentRequest(
            f"invalid judgment request: batch_id: must be a positive int, not {batch_id!r}"
        )
    opts = request.model_dump(include={"protocol", "swap"}, exclude_none=True)
    backend = request.backend or settings.backend
    opts.setdefault("swap", settings.swap if settings.swap is not None else backend in LVLM_BACKENDS)
    return JudgmentSpec(
        tenant=tenant_name or settings.default_tenant,
        user=request.user,
        prompt=request.prompt,
        image_a=request.image_a,
        image_b=request.image_b,
        backend=backend,
        options=opts,
        batch_id=batch_id,
    )


def send_judgments(
    judgment_ids: Sequence[int], *, chunk_size: int = 1, **send_options: Any
) -> list[AsyncResult[Any]]:
    """Messages for ledger rows that are already committed (a row asked for twice gets one message).

    `chunk_size` 1 sends one `judge` message per row (queue `judge`); larger sends `judge_chunk`
    messages (queue `bulk`). `send_options` (queue, countdown, ...) go to every message.
    """
    distinct = list(dict.fromkeys(judgment_ids))
    if chunk_size <= 1:
        return [app.send_task(JUDGE, kwargs={"judgment_id": jid}, **send_options) for jid in distinct]
    return [
        app.send_task(JUDGE_CHUNK, args=(distinct[start : start + chunk_size],), **send_options)
        for start in range(0, len(distinct), chunk_size)
    ]


def queue_for(chunk_size: int, queue: str | None = None) -> str:
    """Where the messages of a submission go: the caller's queue, or `bulk` for chunks, `judge` for one."""
    return queue or ("bulk" if chunk_size > 1 else "judge")


def commit_judgments(
    specs: Sequence[JudgmentSpec], *, session: Session | None = None, queue: str | None = None
) -> list[int]:
    """The first half of a submit: rows recorded (idempotent) and committed; their ids, in order.

    On its own only for callers that run the rows themselves (`pigreward judge`); everyone else sends.
    `queue` is where their messages go (the sweeper looks there for them).
    """
    if session is not None:
        ids = record_judgments(session=session, specs=specs, queue=queue)
        session.commit()
        return ids
    with session_scope(get_db()) as own:
        return record_judgments(session=own, specs=specs, queue=queue)


def submit_judgments(
    specs: Sequence[JudgmentSpec],
    *,
    session: Session | None = None,
    chunk_size: int = 1,
    **send_options: Any,
) -> list[int]:
    """Ledger rows for all specs in one transaction, then their messages; the judgment ids, in order.

    With `session` the rows are written (and committed) in the caller's transaction; otherwise in a
    new one on this process's database.
    """
    ids = commit_judgments(specs, session=session, queue=queue_for(chunk_size, send_options.get("queue")))
    send_judgments(ids, chunk_size=chunk_size, **send_options)
    return ids


def submit_judgment(
    spec: JudgmentSpec, *, session: Session | None = None, **send_options: Any
) -> AsyncResult[Any]:
    """One judgment: its row, then its message; the message's result (`.get()` gives the summary)."""
    [judgment_id] = commit_judgments([spec], session=session, queue=queue_for(1, send_options.get("queue")))
    [message] = send_judgments([judgment_id], **send_options)
    return message


def submit_batch(
    *,
    tenant: str,
    name: str,
    specs: Sequence[JudgmentSpec],
    session: Session | None = None,
    chunk_size: int = 50,
    kind: str = "judge",
) -> tuple[int, list[int]]:
    """A batch and its ledger rows in one transaction, then chunk messages on `bulk`: (batch id, ids)."""

    def record(s: Session) -> tuple[int, list[int]]:
        batch, ids = record_batch(session=s, tenant=tenant, name=name, specs=specs, kind=kind, queue="bulk")
        assert batch.id is not None
        return batch.id, ids

    if session is not None:
        batch_id, ids = record(session)
        session.commit()
    else:
        with session_scope(get_db()) as own:
            batch_id, ids = record(own)
    send_judgments(ids, chunk_size=chunk_size)
    return batch_id, ids


def submit_optimization(
    *,
    user: str,
    prompt: str,
    rounds: int = 3,
    k: int = 4,
    tenant: str | None = None,
    backend: str | None = None,
    options: dict[str, Any] | None = None,
    eval_seeds: int = 8,
    seed: int = 0,
    **send_options: Any,
) -> tuple[int, AsyncResult[Any]]:
    """An optimization run's row (everything needed to run it), then its message: (run id, result)."""
    settings = get_settings()
    with session_scope(get_db()) as session:
        run = create_run(
            session=session,
            tenant=tenant or settings.default_tenant,
            user=user,
            base_prompt=prompt,
            backend=backend or settings.backend,
            rewriter=settings.optimize_rewriter,
            generator=settings.optimize_generator,
            rounds=rounds,
            k=k,
            options={**(options or {}), "eval_seeds": eval_seeds, "seed": seed},
        )
        assert run.id is not None
        run_id = run.id
    return run_id, app.send_task(OPTIMIZE, kwargs={"run_id": run_id}, **send_options)
