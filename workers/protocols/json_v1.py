"""`json-v1`: the judge's answer as JSON, for instruction-tuned VLMs (e.g. Qwen2.5-VL-7B-Instruct).

The server enforces `SCHEMA` through `response_format`; every answer is still validated here with
pydantic. Strings hold no control characters (a name like "Col\x07our" is junk, not a dimension), and
`max_tokens` is sized from the schema's caps (`MAX_TOKENS`), so a schema-valid answer always fits; a
truncated answer is not repaired (a second request with the same limit would be cut off again). The winner is not asked for: it follows from the totals by the paper's decision rule
(larger total wins, equal totals tie), so it can never contradict the scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from core.enums import Outcome, Winner
from workers.generation import ChatMessage, Generation, GenerationRequest, Sampling, TextPart
from workers.imaging import NormalizedImage
from workers.protocols.protocol import JudgeProtocol
from workers.schemas import Dimension, JudgeResult

NAME_CHARS, REASON_CHARS, SUMMARY_CHARS, MAX_DIMENSIONS = 40, 200, 200, 5
NO_CONTROL = "^[^\\x00-\\x1f\\x7f]*$"  # no C0 control characters, no DEL


def _text(min_chars: int, max_chars: int) -> dict[str, Any]:
    """A string schema with its length in the pattern: xgrammar drops min/maxLength beside a pattern."""
    return {"type": "string", "pattern": f"^[^\\x00-\\x1f\\x7f]{{{min_chars},{max_chars}}}$"}


def _capped(max_chars: int) -> AfterValidator:
    """The schema's length cap as the server's grammar counts characters: a byte sequence the tokenizer
    could not decode (shown as U+FFFD, one per byte) was one character to the grammar."""

    def check(value: str) -> str:
        if len(value.replace("\ufffd", "")) > max_chars:
            raise ValueError(f"String should have at most {max_chars} characters")
        return value

    return AfterValidator(check)


Name = Annotated[str, Field(min_length=1, pattern=NO_CONTROL), _capped(NAME_CHARS)]
Reason = Annotated[str, Field(pattern=NO_CONTROL), _capped(REASON_CHARS)]
Summary = Annotated[str, Field(pattern=NO_CONTROL), _capped(SUMMARY_CHARS)]


class JsonDimension(BaseModel):
    """As strict as the schema: no coerced types ("4", true), no extra keys, no control characters."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: Name
    reason: Reason
    score_1: int = Field(ge=1, le=5)
    score_2: int = Field(ge=1, le=5)


class JsonJudgment(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    dimensions: list[JsonDimension] = Field(min_length=1, max_length=MAX_DIMENSIONS)
    summary: Summary


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "dimensions": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_DIMENSIONS,
            "items": {
                "type": "object",
                "properties": {
                    "name": _text(1, NAME_CHARS),
                    "reason": _text(0, REASON_CHARS),
                    "score_1": {"type": "integer", "minimum": 1, "maximum": 5},
                    "score_2": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                "required": ["name", "reason", "score_1", "score_2"],
                "additionalProperties": False,
            },
        },
        "summary": _text(0, SUMMARY_CHARS),
    },
    "required": ["dimensions", "summary"],
    "additionalProperties": False,
}


def _max_json_chars() -> int:
    """The longest answer the schema admits, written compactly (as the grammar makes the server write it)."""
    dimension = json.dumps(
        {"name": "n" * NAME_CHARS, "reason": "r" * REASON_CHARS, "score_1": 5, "score_2": 5},
        separators=(",", ":"),
    )
    whole = json.dumps(
        {"dimensions": ["D"] * MAX_DIMENSIONS, "summary": "s" * SUMMARY_CHARS}, separators=(",", ":")
    )
    return len(whole) + MAX_DIMENSIONS * (len(dimension) - len('"D"'))


# Every token writes at least one character, so an answer the schema admits never needs more tokens
# than it has characters (an escaped quote adds one; the margin covers a few). The server stops at the
# closing brace, so the cap costs nothing unless an answer is that long.
MAX_TOKENS = _max_json_chars() + 32


def validate(text: str) -> tuple[JsonJudgment | None, str | None]:
    """The parsed answer, or None and a one-line reason."""
    try:
        data = json.loads(text, strict=False)  # raw control characters are refused by the schema below
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

    def judge_sampling(self, sampling: Sampling) -> Sampling:
        """`max_tokens` from the schema's caps: PIGREWARD_JUDGE_MAX_TOKENS (512) cut answers short."""
        return sampling.model_copy(update={"max_tokens": MAX_TOKENS})

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

    def verdict_offset(self, text: str) -> int | None:
        """Always None: the winner is not written, it follows from the totals of every dimension's two
        scores, so no single answer token states it (the confidence comes from the score margin)."""
        return None

    def repair(
        self, request: GenerationRequest, gen: Generation, result: JudgeResult
    ) -> GenerationRequest | None:
        # not "truncated": the same limit would cut the second answer off too (and cost two images again)
        if result.invalid_reason not in ("invalid_json", "empty"):
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
