"""Judgments and batches: submit, read, list, progress, cancel."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlmodel import Session

from api.deps import SessionDep, TenantDep, scope_of
from api.schemas import (
    COMMON,
    FORBIDDEN,
    NOT_FOUND,
    BatchAccepted,
    BatchCreate,
    BatchPublic,
    ErrorOut,
    JudgmentCreate,
    JudgmentPublic,
)
from api.waiting import batch_warning
from core.enums import JudgmentStatus
from core.requests import ExternalId, Name
from core.settings import get_settings
from models.batches import batch_counts, cancel_batch, get_batch, is_finished
from models.judgments import dimensions_of, get_judgment, list_judgments
from models.rescoring import flag_judgment, history_of
from models.tables import Batch, Judgment, Tenant, id_of
from tasks.submit import judgment_spec, submit_batch, submit_judgments

router = APIRouter(tags=["judgments"], responses=COMMON)
MAX_ID = 2**31 - 1  # ids and offsets beyond the database's integer range are refused (422), not a 500
DbId = Annotated[int, Path(ge=1, le=MAX_ID)]
JUDGMENT_NOT_FOUND = "judgment not found"
BATCH_NOT_FOUND = "batch not found"


def judgment_public(session: Session, row: Judgment) -> JudgmentPublic:
    assert row.id is not None
    return JudgmentPublic.of(row, dimensions_of(session=session, judgment_id=row.id))


def owned_judgment(session: Session, tenant: Tenant, judgment_id: int) -> Judgment:
    row = get_judgment(session=session, judgment_id=judgment_id)
    if row is None or row.tenant_id != tenant.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, JUDGMENT_NOT_FOUND)
    return row


def owned_batch(session: Session, tenant: Tenant, batch_id: int) -> Batch:
    assert tenant.id is not None
    batch = get_batch(session=session, tenant_id=tenant.id, batch_id=batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, BATCH_NOT_FOUND)
    return batch


def check_images(tenant: Tenant, items: list[JudgmentCreate]) -> None:
    """Every image named must lie in the tenant's scope (403 naming the first one that does not)."""
    scope = scope_of(tenant)
    for n, item in enumerate(items):
        where = f"items[{n}]." if len(items) > 1 else ""
        scope.check(item.image_a, f"{where}image_a")
        scope.check(item.image_b, f"{where}image_b")


def batch_public(session: Session, batch: Batch) -> BatchPublic:
    assert batch.id is not None
    counts = batch_counts(session=session, batch_id=batch.id)
    finished = is_finished(counts)
    warning = batch_warning(created_at=batch.created_at, finished=finished or batch.cancelled_at is not None)
    return BatchPublic.of(batch, counts, finished, warning)


@router.post("/judgments", status_code=status.HTTP_202_ACCEPTED, responses=FORBIDDEN)
def create_judgment(body: JudgmentCreate, session: SessionDep, tenant: TenantDep) -> JudgmentPublic:
    """Submit one judgment; the same submission again returns the same judgment."""
    check_images(tenant, [body])
    spec = judgment_spec(body.user, body.prompt, body.image_a, body.image_b, body.options(), tenant.name)
    [judgment_id] = submit_judgments([spec], session=session)
    return judgment_public(session, owned_judgment(session, tenant, judgment_id))


@router.get("/judgments/{judgment_id}", responses=NOT_FOUND)
def read_judgment(judgment_id: DbId, session: SessionDep, tenant: TenantDep) -> JudgmentPublic:
    """One judgment with its dimensions, raw model output and versions."""
    return judgment_public(session, owned_judgment(session, tenant, judgment_id))


@router.post("/judgments/{judgment_id}/flag", responses=NOT_FOUND)
def flag(judgment_id: DbId, session: SessionDep, tenant: TenantDep) -> JudgmentPublic:
    """Ask for this judgment to be judged again by the next re-scoring run (its verdict is kept as history)."""
    row = owned_judgment(session, tenant, judgment_id)
    assert row.id is not None
    flag_judgment(session=session, judgment_id=row.id)
    session.flush()
    return judgment_public(session, row)


@router.get("/judgments/{judgment_id}/history", responses=NOT_FOUND)
def history(judgment_id: DbId, session: SessionDep, tenant: TenantDep) -> list[dict[str, Any]]:
    """Earlier verdicts of this judgment, replaced by re-scoring runs (oldest first)."""
    row = owned_judgment(session, tenant, judgment_id)
    return [
        {"archived_at": h.archived_at, "reason": h.reason, "run_id": h.run_id, "verdict": h.snapshot}
        for h in history_of(session=session, judgment_id=id_of(row))
    ]


@router.get("/judgments")
def read_judgments(
    session: SessionDep,
    tenant: TenantDep,
    user: ExternalId | None = None,
    batch_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status_: Annotated[JudgmentStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    min_confidence: Annotated[
        float | None,
        Query(
            ge=0.0, le=1.0, description="Only verdicts at least this confident (ties and invalid have none)."
        ),
    ] = None,
) -> list[JudgmentPublic]:
    """List judgments by user, batch, status and confidence."""
    rows = list_judgments(
        session=session,
        tenant_id=id_of(tenant),
        user=user,
        batch_id=batch_id,
        status=status_.value if status_ else None,
        limit=limit,
        offset=offset,
        min_confidence=min_confidence,
    )
    return [judgment_public(session, r) for r in rows]


def _submit(session: Session, tenant: Tenant, name: str, items: list[JudgmentCreate]) -> int:
    limit = get_settings().api_max_batch
    if len(items) > limit:
        raise HTTPException(413, f"a batch holds at most {limit} judgments")
    check_images(tenant, items)
    specs = [judgment_spec(i.user, i.prompt, i.image_a, i.image_b, i.options(), tenant.name) for i in items]
    batch_id, _ = submit_batch(tenant=tenant.name, name=name, specs=specs, session=session)
    return batch_id


@router.post("/batches", status_code=status.HTTP_202_ACCEPTED, responses=FORBIDDEN)
def create_batch(body: BatchCreate, session: SessionDep, tenant: TenantDep) -> BatchPublic:
    """Submit many judgments as one batch (JSON); returns the batch id and its progress."""
    batch_id = _submit(session, tenant, body.name, body.items)
    return batch_public(session, owned_batch(session, tenant, batch_id))


JSONL_TYPES = ("application/x-ndjson", "application/jsonl")


@router.post(
    "/batches/jsonl",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**FORBIDDEN, 415: {"model": ErrorOut, "description": "Not application/x-ndjson"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string"}} for t in JSONL_TYPES},
        }
    },
)
async def create_batch_jsonl(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    name: Name = "batch",
) -> BatchAccepted:
    """Submit a batch as JSON Lines, one judgment object per line (blank lines ignored)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSONL_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send JSON Lines as {JSONL_TYPES[0]}, not {media or 'nothing'}",
        )
    try:
        raw = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": f"not UTF-8 at byte {exc.start}", "type": "value_error"}]
        ) from None
    items: list[JudgmentCreate] = []
    errors: list[dict[str, Any]] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(JudgmentCreate.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(
                {"loc": ["body", f"line {number}"], "msg": f"not JSON: {exc.msg}", "type": "json_invalid"}
            )
        except ValidationError as exc:
            for err in exc.errors():
                errors.append(
                    {"loc": ["body", f"line {number}", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                )
        if len(errors) >= 100:
            break
    if errors:
        raise RequestValidationError(errors)
    if not items:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": "no judgments in the body", "type": "missing"}]
        )
    from fastapi.concurrency import run_in_threadpool

    batch_id = await run_in_threadpool(_submit, session, tenant, name, items)
    return BatchAccepted(id=batch_id, total=len(items))


@router.get("/batches/{batch_id:int}", responses=NOT_FOUND)
def read_batch(batch_id: DbId, session: SessionDep, tenant: TenantDep) -> BatchPublic:
    """Batch progress: counts by status, finished or not."""
    return batch_public(session, owned_batch(session, tenant, batch_id))


@router.post("/batches/{batch_id:int}/cancel", responses=NOT_FOUND)
def cancel(
    batch_id: DbId, session: SessionDep, tenant: TenantDep, _: Annotated[None, Body()] = None
) -> BatchPublic:
    """Cancel the batch's judgments that no worker has started; the rest finish normally."""
    batch = owned_batch(session, tenant, batch_id)
    cancel_batch(session=session, batch_id=id_of(batch))
    session.flush()
    return batch_public(session, batch)
