"""Request and response models of the API: every boundary validated, limits from settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from core.enums import JudgmentStatus, Winner
from core.requests import ApiImageUri, BackendName, ExternalId, JudgmentRequest, Name, Prompt, ProtocolName
from models.tables import Batch, DimensionScore, EndUser, Judgment
from workers.quality import ContextQuality


class ErrorOut(BaseModel):
    """Every error answer: a sentence, or (422) one entry per refused field."""

    detail: str | list[dict[str, Any]]


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description, **extra}


RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
}
COMMON: dict[int | str, dict[str, Any]] = {
    400: _error("The body could not be parsed"),
    401: _error("Missing or invalid API key", headers={"WWW-Authenticate": {"schema": {"type": "string"}}}),
    413: _error("Request body over the configured limit"),
    503: _error("The database or the broker is unavailable; try again", headers=RETRY_AFTER),
}
"""What any /v1 operation may answer besides its own result."""
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such resource for this tenant")}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: _error("An image outside this tenant's image prefixes (`pigreward tenants allow`)")
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(Strict):
    external_id: ExternalId


class UserPublic(BaseModel):
    external_id: str
    created_at: datetime
    references: int
    contexts: int

    @classmethod
    def of(cls, user: EndUser, references: int, contexts: int) -> UserPublic:
        return cls(
            external_id=user.external_id, created_at=user.created_at, references=references, contexts=contexts
        )


class ReferenceCreate(Strict):
    prompt: Prompt
    chosen: ApiImageUri
    rejected: ApiImageUri


class ReferencePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prompt: str
    chosen: str = Field(validation_alias=AliasChoices("chosen", "chosen_uri"))
    rejected: str = Field(validation_alias=AliasChoices("rejected", "rejected_uri"))
    created_at: datetime


class ContextRequest(Strict):
    backend: BackendName | None = None
    protocol: ProtocolName | None = None


class ContextPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    backend: str
    model_id: str
    model_revision: str
    template_version: str
    reference_count: int
    rationales: list[str]
    payload: dict[str, Any]
    quality: ContextQuality | None = Field(
        None,
        description="Leave-one-out check on the user's own references (None: not computed; see "
        "PIGREWARD_CONTEXT_QUALITY): accuracy, agreement of both orders, flagged rationales.",
    )
    created_at: datetime


class JudgmentCreate(JudgmentRequest):
    """A judgment request body (`core.requests.JudgmentRequest`: the rules every way in shares)."""


class DimensionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    score_a: float
    score_b: float
    reason: str


class JudgmentPublic(BaseModel):
    id: int
    user: str = Field(validation_alias=AliasChoices("user", "user_ref"))
    prompt: str
    image_a: str = Field(validation_alias=AliasChoices("image_a", "image_a_uri"))
    image_b: str = Field(validation_alias=AliasChoices("image_b", "image_b_uri"))
    status: JudgmentStatus
    winner: Winner | None
    total_a: float | None
    total_b: float | None
    dimensions: list[DimensionPublic]
    rationale: str | None
    raw_outputs: list[str]
    invalid_reason: str | None
    error_code: str | None
    error: str | None
    backend: str
    judge_model: str | None
    model_revision: str | None
    template_version: str | None
    decoding: dict[str, Any]
    swap: bool
    attempts: int
    usage: dict[str, int]
    timings: dict[str, float]
    confidence: float | None = Field(
        None,
        description="Probability that the user prefers `winner`: calibrated for this backend and model "
        "version when `calibration_version` is set, else the raw value. None without a stated winner.",
    )
    confidence_raw: float | None = None
    calibration_version: str | None = None
    confidence_signals: dict[str, Any] | None = None
    batch_id: int | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Judgment, dimensions: list[DimensionScore]) -> JudgmentPublic:
        return cls.model_validate({**row.model_dump(), "dimensions": [d.model_dump() for d in dimensions]})


class BatchCreate(Strict):
    name: Name = "batch"
    items: list[JudgmentCreate] = Field(min_length=1)


class BatchPublic(BaseModel):
    id: int
    name: str
    total: int
    counts: dict[str, int]
    finished: bool
    cancelled: bool
    created_at: datetime
    warning: str | None = Field(
        None,
        description="Set while the batch is unfinished a few seconds after submission and its queue "
        "holds messages no worker consumes: names the queue and what to start.",
    )

    @classmethod
    def of(
        cls, batch: Batch, counts: dict[str, int], finished: bool, warning: str | None = None
    ) -> BatchPublic:
        assert batch.id is not None
        return cls(
            id=batch.id,
            name=batch.name,
            total=batch.total,
            counts=counts,
            finished=finished,
            cancelled=batch.cancelled_at is not None,
            created_at=batch.created_at,
            warning=warning,
        )


class DeletedUser(BaseModel):
    external_id: str
    deleted: dict[str, int]


class RemovedReference(BaseModel):
    """A reference pair removed; `context_task_id` is the rebuild started (None: no pairs left)."""

    id: int
    remaining: int
    context_task_id: str | None


class ContextStarted(BaseModel):
    task_id: str
    status: str


class BatchAccepted(BaseModel):
    id: int
    total: int
