"""The judgment ledger: rows written before a message is sent, moved through their statuses by workers.

Every write here is idempotent: re-sending a judgment finds its row by natural key, a worker that
re-runs a finished judgment (acks_late redelivery) sees it done and skips it, and a verdict with its
dimension rows is written in one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from core.enums import RETRYABLE_ON_RESEND, JudgmentStatus, Winner
from models.claims import ClaimLost, held
from models.db import affected
from models.tables import DimensionScore, Judgment, UserContext, id_of, utcnow
from models.tenants import ensure_tenant
from models.upsert import insert_ignore, natural_key
from models.users import find_user


class JudgmentSpec(BaseModel):
    """What a client asks for. Content checks (empty prompt, images) happen in the worker, recorded."""

    tenant: str
    user: str
    prompt: str
    image_a: str
    image_b: str
    backend: str = "lite"
    options: dict[str, Any] = Field(default_factory=dict)
    batch_id: int | None = None

    def key(self, tenant_id: int) -> str:
        return natural_key(
            "judgment",
            tenant_id,
            self.user,
            self.prompt,
            self.image_a,
            self.image_b,
            self.backend,
            self.options,
        )


class DimensionRecord(BaseModel):
    name: str
    score_a: float
    score_b: float
    reason: str = ""


VERDICT_COLUMNS = (
    "status",
    "winner",
    "total_a",
    "total_b",
    "rationale",
    "raw_outputs",
    "invalid_reason",
    "error",
    "context_id",
    "image_a_id",
    "image_b_id",
    "judge_model",
    "model_revision",
    "template_version",
    "decoding",
    "swap",
    "timings",
    "usage",
    "confidence",
    "confidence_raw",
    "calibration_version",
    "confidence_signals",
)
"""The judgment columns a verdict writes; a re-scoring archives exactly these before replacing them."""


class VerdictRecord(BaseModel):
    """A finished judgment as the ledger stores it (valid verdict or invalid model output)."""

    status: JudgmentStatus
    winner: Winner | None = None
    total_a: float | None = None
    total_b: float | None = None
    rationale: str | None = None
    raw_outputs: list[str] = Field(default_factory=list)
    invalid_reason: str | None = None
    error: str | None = None  # for invalid outputs: what exactly was wrong, for a person
    dimensions: list[DimensionRecord] = Field(default_factory=list)
    context_id: int | None = None
    image_a_id: int | None = None
    image_b_id: int | None = None
    judge_model: str | None = None
    model_revision: str | None = None
    template_version: str | None = None
    decoding: dict[str, Any] = Field(default_factory=dict)
    swap: bool = False
    timings: dict[str, float] = Field(default_factory=dict)
    usage: dict[str, int] = Field(default_factory=dict)
    confidence: float | None = None
    confidence_raw: float | None = None
    calibration_version: str | None = None
    confidence_signals: dict[str, Any] | None = None


def record_judgments(
    *, session: Session, specs: Sequence[JudgmentSpec], queue: str | None = None
) -> list[int]:
    """Write (or find) the ledger rows for `specs`, in order; returns their ids.

    `queue` is where their messages will go (the sweeper looks there for them). Rows already
    rejected/failed/cancelled are put back to `queued` (attempts reset) so that a re-send retries
    them. The same spec twice gives the same id twice.
    """
    now = utcnow()
    tenant_ids: dict[str, int] = {}
    users: dict[tuple[int, str], int | None] = {}
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    for spec in specs:
        if spec.tenant not in tenant_ids:
            tenant_ids[spec.tenant] = id_of(ensure_tenant(session=session, name=spec.tenant))
        tenant_id = tenant_ids[spec.tenant]
        if (tenant_id, spec.user) not in users:
            user = find_user(session=session, tenant_id=tenant_id, external_id=spec.user)
            users[(tenant_id, spec.user)] = user.id if user else None
        key = spec.key(tenant_id)
        keys.append(key)
        rows.append(
            {
                "key": key,
                "tenant_id": tenant_id,
                "user_ref": spec.user,
                "user_id": users[(tenant_id, spec.user)],
                "batch_id": spec.batch_id,
                "prompt": spec.prompt,
                "image_a_uri": spec.image_a,
                "image_b_uri": spec.image_b,
                "backend": spec.backend,
                "options": spec.options,
                "swap": bool(spec.options.get("swap", False)),
                "status": JudgmentStatus.queued,
                "raw_outputs": [],
                "timings": {},
                "usage": {},
                "attempts": 0,
                "transient_failures": 0,
                "queue": queue,
                "queued_at": now,
                "created_at": now,
            }
        )
    # distinct keys in sorted order: overlapping concurrent submits lock rows in the same order
    unique = sorted({row["key"]: row for row in rows}.values(), key=lambda row: row["key"])
    for start in range(0, len(unique), 500):
        insert_ignore(session, Judgment, unique[start : start + 500], ["key"])
    ids: dict[str, int] = {}
    distinct = sorted(set(keys))
    for start in range(0, len(distinct), 500):
        chunk = distinct[start : start + 500]
        for jid, key in session.exec(select(Judgment.id, Judgment.key).where(col(Judgment.key).in_(chunk))):
            if jid is not None:
                ids[key] = jid
        session.execute(
            sa.update(Judgment)
            .where(col(Judgment.key).in_(chunk), col(Judgment.status).in_(sorted(RETRYABLE_ON_RESEND)))
            .values(
                status=JudgmentStatus.queued,
                error=None,
                error_code=None,
                attempts=0,
                transient_failures=0,
                waiting_since=None,
                claim_token=None,
                queue=queue,
                queued_at=now,
            )
        )
    return [ids[k] for k in keys]


_TABLE: sa.Table = Judgment.__table__  # type: ignore[attr-defined]  # not declared by SQLModel
_DIMS: sa.Table = DimensionScore.__table__  # type: ignore[attr-defined]


def _finish_statement(claimed: bool) -> sa.Update:
    """The verdict UPDATE, built once (a verdict is written per judgment: building the expression
    would cost more Python than running it); `claimed`: only while the claim :token holds the row."""
    stmt = sa.update(_TABLE).where(_TABLE.c.id == sa.bindparam("judgment_id"))
    if claimed:
        stmt = stmt.where(
            _TABLE.c.status == JudgmentStatus.running, _TABLE.c.claim_token == sa.bindparam("token")
        )
    values: dict[str, Any] = {
        name: sa.bindparam(name, type_=_TABLE.c[name].type) for name in (*VERDICT_COLUMNS, "finished_at")
    }
    values.update(error_code=None, claim_token=None, retry_at=None, waiting_since=None, transient_failures=0)
    return stmt.values(values)


_FINISH = _finish_statement(claimed=False)
_FINISH_CLAIMED = _finish_statement(claimed=True)
_DELETE_DIMS = sa.delete(_DIMS).where(_DIMS.c.judgment_id == sa.bindparam("judgment_id"))
_INSERT_DIMS = sa.insert(_DIMS)


def finish_judgment(
    *, session: Session, judgment_id: int, verdict: VerdictRecord, token: str | None = None
) -> None:
    """Store a verdict and its dimension rows together (call inside one transaction).

    With a `token`, only the holder of the claim may write (`ClaimLost` otherwise). The claim check
    and the write are one conditional UPDATE (it takes the row lock and re-checks the condition
    after any concurrent writer), so no separate SELECT ... FOR UPDATE is needed.
    """
    params: dict[str, Any] = {name: getattr(verdict, name) for name in VERDICT_COLUMNS}
    params.update(judgment_id=judgment_id, token=token, finished_at=utcnow())
    updated = session.execute(_FINISH if token is None else _FINISH_CLAIMED, params)
    if affected(updated) != 1:
        held(session, judgment_id, token)  # raises LookupError or ClaimLost with the row's state
        raise ClaimLost(f"judgment {judgment_id} changed while its verdict was written")
    session.execute(_DELETE_DIMS, {"judgment_id": judgment_id})
    if verdict.dimensions:
        session.execute(
            _INSERT_DIMS,
            [
                {
                    "judgment_id": judgment_id,
                    "position": position,
                    "name": dim.name,
                    "score_a": dim.score_a,
                    "score_b": dim.score_b,
                    "reason": dim.reason,
                }
                for position, dim in enumerate(verdict.dimensions)
            ],
        )
    row = session.identity_map.get(session.identity_key(Judgment, judgment_id))
    if row is not None:  # a caller holding the row in this session sees what was written
        session.expire(row)


_SUBJECTS = sa.select(_TABLE.c.user_id, _TABLE.c.backend, _TABLE.c.options).where(
    _TABLE.c.id.in_(sa.bindparam("ids", expanding=True))
)


def judgment_subjects(
    *, session: Session, judgment_ids: Collection[int]
) -> set[tuple[int | None, str, str | None]]:
    """The distinct (user id, backend, protocol option) of these rows: what their contexts depend on."""
    if not judgment_ids:
        return set()
    rows = session.execute(_SUBJECTS, {"ids": sorted(judgment_ids)})
    return {(user_id, backend, (options or {}).get("protocol")) for user_id, backend, options in rows}


def get_judgment(*, session: Session, judgment_id: int) -> Judgment | None:
    return session.get(Judgment, judgment_id)


def dimensions_of(*, session: Session, judgment_id: int) -> list[DimensionScore]:
    stmt = (
        select(DimensionScore)
        .where(DimensionScore.judgment_id == judgment_id)
        .order_by(col(DimensionScore.position))
    )
    return list(session.exec(stmt))


def status_counts(
    *, session: Session, batch_id: int | None = None, ids: Iterable[int] | None = None
) -> dict[str, int]:
    """Counts by status, for progress bars and batch summaries."""
    stmt = select(Judgment.status, func.count()).group_by(Judgment.status)
    if batch_id is not None:
        stmt = stmt.where(Judgment.batch_id == batch_id)
    if ids is not None:
        stmt = stmt.where(col(Judgment.id).in_(list(ids)))
    return {status: n for status, n in session.exec(stmt)}


def list_judgments(
    *,
    session: Session,
    tenant_id: int,
    user: str | None = None,
    batch_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    min_confidence: float | None = None,
) -> list[Judgment]:
    stmt = select(Judgment).where(Judgment.tenant_id == tenant_id)
    if min_confidence is not None:  # only verdicts: ties, invalid, unfinished and failed rows drop out
        stmt = stmt.where(col(Judgment.confidence) >= min_confidence, Judgment.status == JudgmentStatus.done)
    if user is not None:
        stmt = stmt.where(Judgment.user_ref == user)
    if batch_id is not None:
        stmt = stmt.where(Judgment.batch_id == batch_id)
    if status is not None:
        stmt = stmt.where(Judgment.status == status)
    return list(session.exec(stmt.order_by(col(Judgment.id)).limit(limit).offset(offset)))


def recent_judgments(*, session: Session, tenant_id: int, user: str, limit: int = 50) -> list[Judgment]:
    """A user's latest judgments, newest first (by the tenant's external id, so unknown users too)."""
    stmt = (
        select(Judgment)
        .where(Judgment.tenant_id == tenant_id, Judgment.user_ref == user)
        .order_by(col(Judgment.id).desc())
        .limit(limit)
    )
    return list(session.exec(stmt))


def judgments_by_keys(
    *, session: Session, keys: Iterable[str], chunk_size: int = 500
) -> dict[str, tuple[Judgment, UserContext | None]]:
    """The rows of these natural keys, each with the context it was judged with (None if it has none).

    A client that re-sends many judgments (the accuracy harness) decides per row whether the stored
    verdict still holds for the current context; one joined query per chunk saves a lookup per row,
    and chunks keep the IN list under the database's parameter limit. Keys not stored are absent.
    """
    distinct = sorted(set(keys))
    found: dict[str, tuple[Judgment, UserContext | None]] = {}
    for start in range(0, len(distinct), chunk_size):
        stmt = (
            select(Judgment, UserContext)
            .join(UserContext, col(UserContext.id) == col(Judgment.context_id), isouter=True)
            .where(col(Judgment.key).in_(distinct[start : start + chunk_size]))
        )
        for judgment, context in session.exec(stmt):
            found[judgment.key] = (judgment, context)
    return found


def judgments_by_ids(*, session: Session, ids: Iterable[int], chunk_size: int = 500) -> dict[int, Judgment]:
    """The rows of these ids (missing ids are absent), read in chunks to bound the IN list."""
    distinct = sorted(set(ids))
    rows: dict[int, Judgment] = {}
    for start in range(0, len(distinct), chunk_size):
        stmt = select(Judgment).where(col(Judgment.id).in_(distinct[start : start + chunk_size]))
        for row in session.exec(stmt):
            rows[id_of(row)] = row
    return rows
