"""What an LVLM engine is asked and what it answers: chat requests with images, generations.

Messages are engine-neutral: the HTTP engine turns image parts into base64 data URLs, the in-process
engine into Qwen-VL pixel patches. Decoding is always explicit: every field that can change a greedy
answer is sent on every request, so nothing depends on a checkpoint's `generation_config.json` or a
server's defaults, and the resolved parameters are stored with each result (`Sampling.record`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
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
    """Decoding parameters sent with every request. Greedy by default: verdicts must be repeatable.

    `repetition_penalty` defaults to 1.05, the value Qwen2-VL's released `generation_config.json`
    carries (which SGLang and transformers applied silently before it was sent explicitly).
    """

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, description="-1: no top-k cut (SGLang and vLLM spell 'off' as -1)")
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.05, gt=0.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: tuple[str, ...] = ()
    max_tokens: int = Field(512, ge=1, le=8192)
    seed: int | None = 0

    def record(self, grammar: Grammar | None = None) -> dict[str, Any]:
        """What is stored with a result: every decoding field, and the grammar's kind and digest."""
        out: dict[str, Any] = self.model_dump(mode="json")
        out["grammar"] = grammar.label if grammar else None
        return out


@dataclass(frozen=True)
class Grammar:
    """A constrained-decoding grammar in a form SGLang accepts (`ebnf` or `regex`) and xgrammar compiles."""

    kind: Literal["ebnf", "regex"]
    text: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"


def decoding_digest(record: dict[str, Any]) -> str:
    """A short stable hash of a decoding record (part of a context's version)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion. `role` picks the model (the judge or the reasoner)."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    role: Literal["judge", "reasoner"] = "judge"
    json_schema: dict[str, Any] | None = None  # enforce this JSON schema (response_format)
    grammar: Grammar | None = None  # enforce this grammar (SGLang `ebnf`/`regex`; xgrammar in-process)
    top_logprobs: int = 0  # > 0: ask for each answer token's log-probability and this many alternatives


class TokenLogprob(BaseModel):
    """One answer token as OpenAI-compatible servers report it (`choices[0].logprobs.content[i]`)."""

    token: str
    logprob: float
    top_logprobs: dict[str, float] = Field(default_factory=dict)


class Generation(BaseModel):
    text: str
    finish_reason: str  # "stop" | "length" | ...
    model: str = ""
    usage: dict[str, int] = Field(default_factory=dict)
    applied: dict[str, Any] | None = None  # the decoding the server says it applied (ours echoes it)
    logprobs: list[TokenLogprob] | None = None  # per answer token, where asked for and returned


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

    def context_length(self, role: Literal["judge", "reasoner"]) -> int | None:
        """The longest prompt + answer the model accepts, in tokens, or None when unknown."""
        ...

    def close(self) -> None: ...


def template_messages(request: GenerationRequest) -> tuple[list[dict[str, Any]], list[Any]]:
    """The chat as transformers' chat templates take it (one `{"type": "image"}` per image) and the
    images (PIL), in order: what the `hf` engine renders and what token budgets count."""
    messages, images = [], []
    for m in request.messages:
        content: list[dict[str, Any]] = []
        for part in m.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                content.append({"type": "image"})
                images.append(part.image.image)
        messages.append({"role": m.role, "content": content})
    return messages, images
