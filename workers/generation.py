"""What an LVLM engine is asked and what it answers: chat requests with images, generations.

Messages are engine-neutral: the HTTP engine turns image parts into base64 data URLs, the in-process
engine into Qwen-VL pixel patches. Sampling is always explicit (never a server default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from workers.imaging import NormalizedImage


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: NormalizedImage


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    parts: tuple[TextPart | ImagePart, ...]


class Sampling(BaseModel, frozen=True):
    """Decoding parameters sent with every request. Greedy by default: verdicts must be repeatable."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=8192)
    seed: int | None = 0


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion. `role` picks the model (the judge or the reasoner)."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    role: Literal["judge", "reasoner"] = "judge"
    json_schema: dict[str, Any] | None = None  # enforce this JSON schema (response_format)
    extra: dict[str, Any] = field(default_factory=dict)


class Generation(BaseModel):
    text: str
    finish_reason: str  # "stop" | "length" | ...
    model: str = ""
    usage: dict[str, int] = Field(default_factory=dict)


@dataclass(frozen=True)
class ModelIdentity:
    model_id: str
    revision: str


@runtime_checkable
class Engine(Protocol):
    """Runs chat generations for a backend: over HTTP (SGLang, any OpenAI-compatible server) or in-process.

    `generate` is thread-safe and may be called from many threads at once; engines batch or bound
    concurrency themselves. Transient failures raise `BackendUnavailable`, refusals `BackendRejected`.
    """

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...

    def identity(self, role: Literal["judge", "reasoner"]) -> ModelIdentity: ...

    def close(self) -> None: ...
