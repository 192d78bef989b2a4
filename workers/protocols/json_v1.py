"""`json-v1`: the judge's answer as JSON, for instruction-tuned VLMs (e.g. Qwen2.5-VL-7B-Instruct).

The server enforces `SCHEMA` through `response_format`; every answer is still validated here with
pydantic. The winner is not asked for: it follows from the totals by the paper's decision rule
(larger total wins, equal totals tie), so it can never contradict the scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.enums import Outcome, Winner
from workers.generation import ChatMessage, Generation, GenerationRequest, Sampling, TextPart
from workers.imaging import NormalizedImage
from workers.protocols.protocol import JudgeProtocol
from workers.schemas import Dimension, JudgeResult


class JsonDimension(BaseModel):
    """As strict as the schema: no coerced types ("4", true), no extra keys."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=40)
    reason: str = Field(max_length=200)
    score_1: int = Field(ge=1, le=5)
    score_2: int = Field(ge=1, le=5)


class JsonJudgment(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    dimensions: list[JsonDimension] = Field(min_length=1, max_length=5)
    summary: str = Field(max_length=200)


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "dimensions": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 40},
                    "reason": {"type": "string", "maxLength": 200},
                    "score_1": {"type": "integer", "minimum": 1, "maximum": 5},
                    "score_2": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                "required": ["name", "reason", "score_1", "score_2"],
                "additionalProperties": False,
            },
        },
        "summary": {"type": "string", "maxLength": 200},
    },
    "required": ["dimensions", "summary"],
    "additionalProperties": False,
}


def validate(text: str) -> tuple[JsonJudgment | None, str | None]:
    """The parsed answer, or None and a one-line reason."""
    try:
        data = json.loads(text, strict=False)  # control characters inside strings are tolerated
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at char {exc.pos}"
    try:
        return JsonJudgment.model_validate(data), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"schema: {where}: {first['msg']}"


class JsonV1(JudgeProtocol):
    """JSON answers, schema-enforced by the server and validated here; winner from the totals."""

    name = "json-v1"
    schema = SCHEMA

    def judge_request(
        self,
        rationales: Sequence[str],
        prompt: str,
        image_1: NormalizedImage,
        image_2: NormalizedImage,
        sampling: Sampling,
    ) -> GenerationRequest:
        request = super().judge_request(rationales, prompt, image_1, image_2, sampling)
        return GenerationRequest(
            messages=request.messages, sampling=request.sampling, role="judge", json_schema=self.schema
        )

    def parse(self, gen: Generation) -> JudgeResult:
        if gen.finish_reason == "malformed":
            return self._invalid(
                gen, "malformed_response", "the server's answer was not an OpenAI chat completion"
            )
        if not gen.text.strip():
            return self._invalid(gen, "empty", "no output")
        if gen.finish_reason == "length":
            return self._invalid(gen, "truncated", "the answer hit the token limit")
        answer, problem = validate(gen.text)
        if answer is None:
            return self._invalid(gen, "invalid_json", problem)
        total_1 = sum(d.score_1 for d in answer.dimensions)
        total_2 = sum(d.score_2 for d in answer.dimensions)
        winner = Winner.tie if total_1 == total_2 else (Winner.A if total_1 > total_2 else Winner.B)
        return JudgeResult(
            outcome=Outcome.valid,
            winner=winner,
            dimensions=[
                Dimension(name=d.name, reason=d.reason, score_a=d.score_1, score_b=d.score_2)
                for d in answer.dimensions
            ],
            total_a=total_1,
            total_b=total_2,
            rationale=answer.summary,
            raw_text=gen.text,
            usage=gen.usage,
        )

    def repair(
        self, request: GenerationRequest, gen: Generation, result: JudgeResult
    ) -> GenerationRequest | None:
        if result.invalid_reason not in ("invalid_json", "truncated", "empty"):
            return None
        follow_up = (
            f"Your answer was not valid ({result.invalid_detail}). Answer again with only the JSON object, "
            "following the schema exactly."
        )
        messages = (
            *request.messages,
            ChatMessage("assistant", (TextPart(gen.text),)),
            ChatMessage("user", (TextPart(follow_up),)),
        )
        return GenerationRequest(
            messages=messages, sampling=request.sampling, role=request.role, json_schema=request.json_schema
        )
