"""`json-v1`: the judge's answer as JSON, for instruction-tuned VLMs (e.g. Qwen2.5-VL-7B-Instruct).

The server enforces `SCHEMA` through `response_format`; every answer is still validated here with
pydantic. The winner is not asked for: it follows from the totals by the paper's decision rule
(larger total wins, equal totals tie), so it can never contradict the scores.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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
