"""How sure a verdict is: the raw probability that the user prefers the stated winner, and why.

The rule, per backend (documented in README, "Trust signals"):

- `lite`: the Bradley-Terry probability of its own model, sigmoid(total_1 - total_2).
- LVLM backends, where the server returned log-probabilities for the verdict token: the probability
  of the stated image's digit against the other one, p("1") / (p("1") + p("2")) at that position.
- otherwise (no log-probabilities): the score margin, sigmoid(MARGIN_SCALE x (winner's total -
  loser's total) / dimensions), as the judge wrote its scores.

With both orders judged, each order gives its probability for image A and the two are averaged; a
verdict whose orders disagree (`inconsistent`), a tie and an invalid output state no winner and get
no confidence. The raw value is then mapped by the calibration fitted for the backend and model
version (`workers.calibration`); without one, the raw value is what is stored, marked uncalibrated.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

from core.enums import Outcome, Winner
from workers.position import PairVerdict
from workers.schemas import JudgeResult, VerdictToken

MARGIN_SCALE = 1.0
"""A mean per-dimension lead of one point (on the judge's 1-10 scale) reads as p = 0.73."""
P_FLOOR = 1e-4


class ConfidenceSignals(BaseModel):
    """What a verdict's confidence was computed from; stored with the judgment."""

    source: Literal["bradley-terry", "logprobs", "margin"]
    p_raw: float  # probability that the stated winner is preferred, before calibration
    margin: float | None = None  # winner's total minus the loser's, per dimension, mean over orders
    orders: int = 1
    agreement: bool | None = None  # both orders named the same image (None: one order judged)
    verdict_tokens: list[VerdictToken] = []  # as the server returned them, one per order


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _clip(p: float) -> float:
    return min(1.0 - P_FLOOR, max(P_FLOOR, p))


def _margin_p1(result: JudgeResult) -> float | None:
    """P(Image 1) from the judge's scores: sigmoid of the mean per-dimension lead."""
    if result.total_a is None or result.total_b is None:
        return None
    n = max(1, len(result.dimensions))
    return _sigmoid(MARGIN_SCALE * (result.total_a - result.total_b) / n)


def raw_confidence(verdict: PairVerdict) -> ConfidenceSignals | None:
    """The raw confidence of a verdict, or None when it states no winner (tie, inconsistent, invalid)."""
    if verdict.outcome != Outcome.valid or verdict.winner not in (Winner.A, Winner.B):
        return None
    orders = [(verdict.first, False)] + ([(verdict.second, True)] if verdict.second is not None else [])
    own = [r.p_image_1 for r, _ in orders]
    source: Literal["bradley-terry", "logprobs", "margin"]
    p_image_1: list[float] = []
    if all(p is not None for p in own):
        sources = {r.p_source for r, _ in orders}
        source = "bradley-terry" if sources == {"bradley-terry"} else "logprobs"
        p_image_1 = [float(p) for p in own if p is not None]
    else:
        source = "margin"
        for r, _ in orders:
            p = _margin_p1(r)
            if p is None:
                return None
            p_image_1.append(p)
    # each order's probability for image A (the second order showed B as "Image 1")
    p_a = sum((1.0 - p) if swapped else p for p, (_, swapped) in zip(p_image_1, orders, strict=True)) / len(
        orders
    )
    margins = [
        ((r.total_b - r.total_a) if swapped else (r.total_a - r.total_b)) / max(1, len(r.dimensions))
        for r, swapped in orders
        if r.total_a is not None and r.total_b is not None
    ]
    margin_a = sum(margins) / len(margins) if margins else None
    stated_a = verdict.winner == Winner.A
    return ConfidenceSignals(
        source=source,
        p_raw=round(_clip(p_a if stated_a else 1.0 - p_a), 6),
        margin=None if margin_a is None else round(margin_a if stated_a else -margin_a, 4),
        orders=len(orders),
        agreement=True if len(orders) == 2 else None,
        verdict_tokens=[r.verdict_token for r, _ in orders if r.verdict_token is not None],
    )


def token_probability(token: VerdictToken, digit: str) -> float | None:
    """P(`digit`) against the other image's digit at the verdict position, from the returned
    log-probabilities; None when the stated digit is not among them."""
    other = "2" if digit == "1" else "1"
    alternatives = {k.strip(): v for k, v in token.top_logprobs.items()}
    alternatives.setdefault(token.token.strip(), token.logprob)
    if digit not in alternatives:
        return None
    p_digit = math.exp(alternatives[digit])
    p_other = math.exp(alternatives[other]) if other in alternatives else 0.0
    return p_digit / (p_digit + p_other)
