"""Context quality: how well a user's context predicts the user's own choices it was not built from.

Each reference pair is held out in turn and judged with the context of the others (both orders on
LVLM backends): the share judged for the image the user chose is the context's leave-one-out
accuracy, and with two orders, the share where both orders agreed. It costs one judgment per
reference (two with both orders), so a setting decides whether it runs (`PIGREWARD_CONTEXT_QUALITY`).

Rationales that predict none of the held-out choices are flagged:
- `lite`: a rationale names the features that most favour the chosen image, and in which direction;
  it predicts another pair when those features, so directed, favour that pair's chosen image. One
  that predicts none of the other pairs (or names no feature at all) is flagged.
- LVLM backends: a context of one rationale per other reference would cost n x (n - 1) judgments,
  so a rationale is flagged when the rest of the context judges its own pair, in every order, for
  the image the user rejected: the choice it explains is one no other rationale predicts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, computed_field

from core.enums import Outcome, Winner
from workers.backends.base import Backend
from workers.backends.lite import LiteBackend, cited_features
from workers.confidence import raw_confidence
from workers.position import judge_pair
from workers.schemas import ContextData, ReferenceExample

HeldOutWinner = Literal["chosen", "rejected", "tie", "inconsistent", "invalid"]


class HeldOut(BaseModel):
    """One reference judged with the context of the others."""

    index: int  # position among the user's references (oldest first)
    winner: HeldOutWinner
    correct: bool
    p_raw: float | None = None  # raw confidence of the stated winner (None: no winner stated)
    source: str | None = None  # what p_raw came from: bradley-terry | logprobs | margin


class ContextQuality(BaseModel):
    """Stored with the context (`user_context.quality`) and shown by the API, viewer and CLI."""

    accuracy: float = Field(ge=0.0, le=1.0)  # leave-one-out: ties, disagreements, invalid count as wrong
    held_out: int
    correct: int
    orders: int
    agreement: float | None = None  # share of held-out pairs both orders agreed on (None: one order)
    flagged: list[int] = Field(default_factory=list)  # reference indices whose rationale predicts none
    flag_rule: str
    per_reference: list[HeldOut] = Field(default_factory=list)
    judge_model: str = ""  # the judge that ran the check (calibrations are fitted per judge model)
    judge_revision: str = ""
    seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def score(self) -> float:
        """The accuracy shrunk toward chance for few references, (correct + 1) / (held out + 2): what
        confidence calibration and rankings of users use (2 of 2 right is weaker evidence than 20 of 20)."""
        return round((self.correct + 1) / (self.held_out + 2), 4)


def assess_context(
    backend: Backend, references: Sequence[ReferenceExample], context: ContextData, *, swap: bool
) -> ContextQuality | None:
    """Leave-one-out quality of `context` (built from `references`); None with fewer than 2 pairs."""
    if len(references) < 2:
        return None
    started = time.perf_counter()
    lite = backend.name == "lite"
    held: list[HeldOut] = []
    for i, ref in enumerate(references):
        others = [r for j, r in enumerate(references) if j != i]
        loo = backend.build_context(others) if lite else _without(context, references, i)
        held.append(_judge_held_out(backend, loo, ref, i, swap))
    orders = 2 if swap else 1
    agreed = [h.winner not in ("inconsistent", "invalid") for h in held] if swap else []
    if isinstance(backend, LiteBackend):
        flagged, rule = _flag_lite(backend, references, context), "the features its rationale names"
    else:
        flagged = [h.index for h in held if h.winner == "rejected"]
        rule = "own pair judged for the rejected image by the rest of the context"
    correct = sum(h.correct for h in held)
    return ContextQuality(
        accuracy=round(correct / len(held), 4),
        held_out=len(held),
        correct=correct,
        orders=orders,
        agreement=round(sum(agreed) / len(agreed), 4) if agreed else None,
        flagged=flagged,
        flag_rule=rule,
        per_reference=held,
        judge_model=backend.model_id,
        judge_revision=backend.model_revision,
        seconds=round(time.perf_counter() - started, 4),
    )


def _judge_held_out(
    backend: Backend, context: ContextData, ref: ReferenceExample, index: int, swap: bool
) -> HeldOut:
    """The held-out pair as a judgment of (chosen, rejected): correct when A, the chosen image, wins."""
    verdict = judge_pair(backend, context, ref.prompt, ref.chosen, ref.rejected, swap=swap)
    if verdict.outcome != Outcome.valid:
        return HeldOut(index=index, winner="invalid", correct=False)
    names: dict[Winner | None, HeldOutWinner] = {
        Winner.A: "chosen",
        Winner.B: "rejected",
        Winner.tie: "tie",
        Winner.inconsistent: "inconsistent",
    }
    signals = raw_confidence(verdict)
    winner = names.get(verdict.winner, "invalid")
    return HeldOut(
        index=index,
        winner=winner,
        correct=winner == "chosen",
        p_raw=signals.p_raw if signals else None,
        source=signals.source if signals else None,
    )


def _without(context: ContextData, references: Sequence[ReferenceExample], index: int) -> ContextData:
    """The LVLM context minus the rationale of reference `index` (rationales left out at build time
    are recorded by reference index in the payload, so the kept ones are matched back to theirs)."""
    issues = context.payload.get("rationale_issues") or {}
    kept = [i for i in range(len(references)) if not str(issues.get(str(i), "")).startswith("left out")]
    if len(kept) != len(context.rationales):  # not a context this backend built: drop nothing
        return context
    rationales = [r for i, r in zip(kept, context.rationales, strict=True) if i != index]
    return ContextData(rationales=rationales, payload=context.payload)


def _flag_lite(
    backend: LiteBackend, references: Sequence[ReferenceExample], context: ContextData
) -> list[int]:
    """References whose rationale predicts none of the other choices. A `lite` rationale names the
    features that most favour the chosen image and in which direction (`cited_features`); it
    predicts another pair when those features, so directed, favour that pair's chosen image. A
    rationale that names none ("goes against their usual pattern") predicts nothing."""
    if len(references) < 3:
        return []
    weights = np.asarray(context.payload["weights"], dtype=float)
    scale = np.asarray(context.payload["scale"], dtype=float)
    diffs = [(backend.features(r.chosen) - backend.features(r.rejected)) / scale for r in references]
    flagged = []
    for i, diff in enumerate(diffs):
        cited = cited_features(diff, weights)
        direction = np.sign(diff[cited])
        right = sum(
            1 for j, other in enumerate(diffs) if j != i and cited and float(direction @ other[cited]) > 0
        )
        if right == 0:
            flagged.append(i)
    return flagged
