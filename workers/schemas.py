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


class VerdictToken(BaseModel):
    """The log-probabilities the server returned for the token that states the verdict ("1"/"2")."""

    token: str
    logprob: float
    top_logprobs: dict[str, float] = Field(default_factory=dict)  # alternatives at that position


class JudgeResult(BaseModel):
    """One judgment in one order. `winner` refers to the order the images were passed in.

    `p_image_1` is the backend's own probability that Image 1 is preferred, where it has one (`lite`:
    Bradley-Terry; LVLM backends: the verdict token's log-probabilities, when the server returns them);
    `p_source` says which. `workers.confidence` turns it, or the score margin, into a confidence.
    """

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
    p_image_1: float | None = Field(None, ge=0.0, le=1.0)
    p_source: str | None = None  # "bradley-terry" | "logprobs"
    verdict_token: VerdictToken | None = None
