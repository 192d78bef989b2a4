"""Request and response models of the API: every boundary validated, limits from settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from core.enums import JudgmentStatus, Winner
from core.settings import get_settings
from models.tables import Batch, DimensionScore, EndUser, Judgment

ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]
BackendName = Literal["lite", "sglang", "hf"]
ProtocolName = Literal["pigreward-v1", "json-v1"]


def _prompt(value: str) -> str:
    limit = get_settings().api_max_prompt_chars
    if not value.strip():
        raise ValueError("prompt is empty")
    if len(value) > limit:
        raise ValueError(f"prompt is longer than {limit} characters")
    return value


def _image_uri(value: str) -> str:
    """Only locations the workers read without fetching anything: s3:// (allowed buckets), file:// if enabled."""
    settings = get_settings()
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ValueError("S3 URIs look like s3://bucket/key")
        if settings.s3_allowed_buckets and bucket not in settings.s3_allowed_buckets:
            raise ValueError(f"bucket {bucket!r} is not allowed")
        return value
    if value.startswith("file://"):
        if not settings.api_allow_file_uris:
            raise ValueError("file:// URIs are not accepted by this API; use s3:// or upload the image")
        if ".." in value.split("/") or "\x00" in value:
            raise ValueError("file:// URIs may not climb out of the image root")
        return value
    scheme = value.split("://", 1)[0] if "://" in value else "(none)"
    raise ValueError(f"image URI scheme {scheme!r} is not allowed: use s3://bucket/key")


Prompt = Annotated[str, AfterValidator(_prompt)]
ImageUri = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_image_uri)]


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
    chosen: ImageUri
    rejected: ImageUri


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
    created_at: datetime


class JudgmentCreate(Strict):
    user: ExternalId
    prompt: Prompt
    image_a: ImageUri
    image_b: ImageUri
    backend: BackendName | None = None
    protocol: ProtocolName | None = None
    swap: StrictBool | None = None

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.backend:
            out["backend"] = self.backend
        if self.protocol:
            out["protocol"] = self.protocol
        if self.swap is not None:
            out["swap"] = self.swap
        return out


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
    swap: bool
    attempts: int
    usage: dict[str, int]
    timings: dict[str, float]
    batch_id: int | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Judgment, dimensions: list[DimensionScore]) -> JudgmentPublic:
        return cls.model_validate({**row.model_dump(), "dimensions": [d.model_dump() for d in dimensions]})


class BatchCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "batch"
    items: list[JudgmentCreate] = Field(min_length=1)


class BatchPublic(BaseModel):
    id: int
    name: str
    total: int
    counts: dict[str, int]
    finished: bool
    cancelled: bool
    created_at: datetime

    @classmethod
    def of(cls, batch: Batch, counts: dict[str, int], finished: bool) -> BatchPublic:
        assert batch.id is not None
        return cls(
            id=batch.id,
            name=batch.name,
            total=batch.total,
            counts=counts,
            finished=finished,
            cancelled=batch.cancelled_at is not None,
            created_at=batch.created_at,
        )


class DeletedUser(BaseModel):
    external_id: str
    deleted: dict[str, int]
