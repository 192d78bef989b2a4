"""SQLModel tables: the ledger of everything asked for and everything the models said.

Statuses and winners are the str enums of `core.enums`, stored as short strings (portable across
SQLite and Postgres, no database enum types to migrate). Natural keys are sha256 hex digests of the identifying fields,
so a UNIQUE constraint on one short column makes re-sends idempotent on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from core.enums import ContextStatus, JudgmentStatus, RunStatus, Winner


class EnumText(sa.types.TypeDecorator[StrEnum]):
    """A str enum stored as its short string: written as the value, read back as the enum member."""

    impl = sa.String(16)
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)


class _Row(Protocol):
    id: int | None


def id_of(row: _Row) -> int:
    """The primary key of a row that was inserted (it is None only before the INSERT is flushed)."""
    if row.id is None:
        raise ValueError(f"{type(row).__name__} has no id yet: flush the session first")
    return row.id


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False) -> Any:
    """A tz-aware timestamp column: set now, or left empty until the event happens."""
    if nullable:
        return Field(default=None, sa_type=sa.DateTime(timezone=True), nullable=True)
    return Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), nullable=False)


class Tenant(SQLModel, table=True):
    """An API client's organisation. `image_prefixes` are the only image locations its requests may
    name (`core.scope`); its uploads go under `uploads/<id>/` and are always its own."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    image_prefixes: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    created_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    """An API key of a tenant. Only a sha256 of the key is stored; `prefix` finds the row."""

    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    last_used_at: datetime | None = _ts(nullable=True)


class EndUser(SQLModel, table=True):
    """A person whose taste is modelled, known to the tenant by `external_id`."""

    __tablename__ = "end_user"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id", name="uq_end_user_external"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    external_id: str = Field(max_length=200)
    created_at: datetime = _ts()


class ImageRecord(SQLModel, table=True):
    """One image content (sha256 of the stored bytes); `uri` is where it was first seen."""

    __tablename__ = "image"
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True)
    uri: str = Field(max_length=2048)
    width: int
    height: int
    format: str = Field(max_length=16)
    size_bytes: int
    created_at: datetime = _ts()


class ReferencePair(SQLModel, table=True):
    """(prompt, chosen, rejected) of one user; images by URI, resolved when a context is built."""

    __tablename__ = "reference_pair"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="end_user.id", index=True)
    prompt: str = Field(sa_type=sa.Text)
    chosen_uri: str = Field(max_length=2048)
    rejected_uri: str = Field(max_length=2048)
    created_at: datetime = _ts()


class UserContext(SQLModel, table=True):
    """C_u: one rationale per reference pair plus the backend's payload, versioned.

    A context is valid for exactly the references hash, backend, model revision and template it was
    built with; any change of those makes a new row and the old one stays as history.
    """

    __tablename__ = "user_context"
    __table_args__ = (
        sa.UniqueConstraint(
            "user_id",
            "references_hash",
            "backend",
            "model_id",
            "model_revision",
            "template_version",
            name="uq_user_context_version",
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="end_user.id", index=True)
    references_hash: str = Field(max_length=64)
    reference_count: int = 0
    backend: str = Field(max_length=32)
    model_id: str = Field(max_length=200)
    model_revision: str = Field(max_length=100)
    template_version: str = Field(max_length=50)
    status: ContextStatus = Field(default=ContextStatus.ready, sa_type=EnumText(ContextStatus))
    rationales: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_type=sa.Text)
    build_seconds: float | None = None
    # leave-one-out check of the context on the user's own references (workers.quality.ContextQuality);
    # None where it was not computed (PIGREWARD_CONTEXT_QUALITY off, or fewer than 2 references)
    quality: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts()


class Batch(SQLModel, table=True):
    """A group of judgments submitted together (bulk form, demo, nightly runs)."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32, default="judge")
    total: int = 0
    created_at: datetime = _ts()
    cancelled_at: datetime | None = _ts(nullable=True)


class BatchItem(SQLModel, table=True):
    """Which judgments a batch asked for, in order (a judgment can be asked for by several batches)."""

    __tablename__ = "batch_item"
    batch_id: int = Field(foreign_key="batch.id", primary_key=True)
    position: int = Field(primary_key=True)
    judgment_id: int = Field(foreign_key="judgment.id", index=True)


class Judgment(SQLModel, table=True):
    """One requested comparison and, once done, its verdict. `key` is the natural key."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_ref: str = Field(max_length=200)  # the tenant's external id, kept even if unknown
    user_id: int | None = Field(default=None, foreign_key="end_user.id", index=True)
    batch_id: int | None = Field(default=None, foreign_key="batch.id", index=True)
    context_id: int | None = Field(default=None, foreign_key="user_context.id")
    prompt: str = Field(sa_type=sa.Text)
    image_a_uri: str = Field(max_length=2048)
    image_b_uri: str = Field(max_length=2048)
    image_a_id: int | None = Field(default=None, foreign_key="image.id")
    image_b_id: int | None = Field(default=None, foreign_key="image.id")
    backend: str = Field(max_length=32)
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    judge_model: str | None = Field(default=None, max_length=200)
    model_revision: str | None = Field(default=None, max_length=100)
    template_version: str | None = Field(default=None, max_length=50)
    # every decoding parameter the verdict was produced with (a change makes it stale)
    decoding: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    swap: bool = False
    status: JudgmentStatus = Field(
        default=JudgmentStatus.queued, sa_type=EnumText(JudgmentStatus), index=True
    )
    winner: Winner | None = Field(default=None, sa_type=EnumText(Winner))
    total_a: float | None = None
    total_b: float | None = None
    rationale: str | None = Field(default=None, sa_type=sa.Text)
    raw_outputs: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    invalid_reason: str | None = Field(default=None, max_length=64)
    error_code: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_type=sa.Text)
    attempts: int = 0  # runs started (claims); with transient_failures, the crash-loop guard
    claim_token: str | None = Field(default=None, max_length=200)  # who runs it now (Celery task id)
    claimed_by: str | None = Field(default=None, max_length=200)  # the worker process holding the claim
    heartbeat_at: datetime | None = _ts(nullable=True)  # renewed by the holder while it runs the row
    queue: str | None = Field(default=None, max_length=64)  # where its messages go (judge, bulk, ...)
    queued_at: datetime | None = _ts(nullable=True)  # when it last became queued (message sent)
    retry_at: datetime | None = _ts(nullable=True)  # waiting: when it is due again
    waiting_since: datetime | None = _ts(nullable=True)  # start of the current run of transient errors
    transient_failures: int = 0  # runs that ended in a transient error, in the current streak
    flagged_at: datetime | None = _ts(nullable=True)  # a person asked for it to be judged again
    timings: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    usage: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # probability that the user prefers the stated winner (calibrated where a calibration of this
    # backend and model version exists); None when no winner is stated (tie, inconsistent, invalid)
    confidence: float | None = Field(default=None, index=True)
    confidence_raw: float | None = None
    calibration_version: str | None = Field(default=None, max_length=200)  # None: uncalibrated
    confidence_signals: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)


class DimensionScore(SQLModel, table=True):
    """One evaluation dimension of one judgment: a score per image and the reason."""

    __tablename__ = "dimension_score"
    __table_args__ = (sa.UniqueConstraint("judgment_id", "position", name="uq_dimension_position"),)
    id: int | None = Field(default=None, primary_key=True)
    judgment_id: int = Field(foreign_key="judgment.id", index=True)
    position: int
    name: str = Field(max_length=200)
    score_a: float
    score_b: float
    reason: str = Field(default="", sa_type=sa.Text)


class ReconcileState(SQLModel, table=True):
    """The sweeper's one row: who sweeps now (a lease, so one worker sweeps at a time), when the last
    sweep ended, and the broker epoch whose sentinel message proves the broker kept its messages."""

    __tablename__ = "reconcile_state"
    id: int = Field(default=1, primary_key=True)
    holder: str | None = Field(default=None, max_length=200)
    locked_until: datetime | None = _ts(nullable=True)
    last_run_at: datetime | None = _ts(nullable=True)
    broker_epoch: str | None = Field(default=None, max_length=64)
    sweeps: int = 0  # sweeps done so far
    resent: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # by reason


class CalibrationRecord(SQLModel, table=True):
    """A fitted confidence calibration (workers.calibration.Calibration) for one backend and model
    version; the newest one of a version is the one applied."""

    __tablename__ = "calibration"
    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(max_length=200, unique=True)
    backend: str = Field(max_length=32)
    model_id: str = Field(max_length=200)
    model_revision: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    pairs: int = 0
    source: str = Field(max_length=200)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


class JudgmentHistory(SQLModel, table=True):
    """A verdict that was replaced by a re-scoring: the old result, kept whole."""

    __tablename__ = "judgment_history"
    id: int | None = Field(default=None, primary_key=True)
    judgment_id: int = Field(foreign_key="judgment.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="rescore_run.id", index=True)
    reason: str = Field(max_length=64)
    snapshot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    archived_at: datetime = _ts()


class RescoreRun(SQLModel, table=True):
    """One re-scoring job (nightly or by hand); `run_key` makes a second run of the same night a no-op."""

    __tablename__ = "rescore_run"
    id: int | None = Field(default=None, primary_key=True)
    run_key: str = Field(max_length=100, unique=True)
    status: RunStatus = Field(default=RunStatus.running, sa_type=EnumText(RunStatus))
    requeued: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class OptimizationRun(SQLModel, table=True):
    """One personalized prompt optimization: a user, a base prompt, rounds of candidates."""

    __tablename__ = "optimization_run"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_ref: str = Field(max_length=200)
    base_prompt: str = Field(sa_type=sa.Text)
    backend: str = Field(max_length=32)
    rewriter: str = Field(max_length=32)
    generator: str = Field(max_length=32)
    rounds: int
    k: int
    status: RunStatus = Field(default=RunStatus.queued, sa_type=EnumText(RunStatus))
    rounds_done: int = 0
    best_prompt: str | None = Field(default=None, sa_type=sa.Text)
    best_win_rate: float | None = None  # the judge's win rate of the best prompt against the base prompt
    eval_comparisons: int | None = None
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class OptimizationCandidate(SQLModel, table=True):
    __tablename__ = "optimization_candidate"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="optimization_run.id", index=True)
    round: int
    prompt: str = Field(sa_type=sa.Text)
    image_uri: str = Field(max_length=2048)
    seed: int
    wins: float = 0.0
    games: int = 0
    created_at: datetime = _ts()


class OptimizationPair(SQLModel, table=True):
    """One pairwise judgment between two candidates of a round (both orders when the judge swaps)."""

    __tablename__ = "optimization_pair"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="optimization_run.id", index=True)
    round: int
    candidate_a_id: int = Field(foreign_key="optimization_candidate.id")
    candidate_b_id: int = Field(foreign_key="optimization_candidate.id")
    judgment_id: int = Field(foreign_key="judgment.id", index=True)
    winner: Winner | None = Field(default=None, sa_type=EnumText(Winner))
