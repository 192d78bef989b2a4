"""Typed values that cross the backend boundary: references in, contexts and verdicts out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from core.enums import Outcome, Winner
from workers.imaging import NormalizedImage


@dataclass(frozen=True)
class ReferenceExample:
    """One of the user's reference pairs with its images already normalized."""

    prompt: str
    chosen: NormalizedImage
    rejected: NormalizedImage


class ContextData(BaseModel):
    """C_u as a backend produced it: one rationale per reference, plus what the backend needs later."""

    rationales: list[str]
    payload: dict[str, Any] = Field(default_factory=dict)


class Dimension(BaseModel):
    name: str
    reason: str
    score_a: float  # for the image passed first (Image 1)
    score_b: float


class JudgeResult(BaseModel):
    """One judgment in one order. `winner` refers to the order the images were passed in."""

    outcome: Outcome
    winner: Winner | None = None  # A, B or tie
    dimensions: list[Dimension] = Field(default_factory=list)
    total_a: float | None = None
    total_b: float | None = None
    rationale: str = ""
    raw_text: str = ""
    invalid_reason: str | None = None  # machine-readable (e.g. "repetition", "truncated")
    invalid_detail: str | None = None  # what exactly was wrong, for a person
    timings: dict[str, float] = Field(default_factory=dict)
    usage: dict[str, int] = Field(default_factory=dict)
