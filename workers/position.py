"""Position-bias control: judge (A, B) and, when asked, (B, A), and combine the two verdicts.

LVLM judges favour "Image 1" whatever it shows; a verdict only counts when both orders agree. The
combined winner is A, B, tie, `inconsistent` (orders disagree) — or the result is invalid if either
order's output was invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.enums import Outcome, Winner
from workers.backends.base import Backend
from workers.imaging import NormalizedImage
from workers.schemas import ContextData, JudgeResult

_FLIP = {Winner.A: Winner.B, Winner.B: Winner.A, Winner.tie: Winner.tie}


@dataclass(frozen=True)
class PairVerdict:
    """A judgment of A vs B; `first` is the (A, B) order, `second` the swapped order if run."""

    outcome: Outcome
    winner: Winner | None  # A | B | tie | inconsistent, None when invalid
    invalid_reason: str | None
    first: JudgeResult
    second: JudgeResult | None

    @property
    def invalid_detail(self) -> str | None:
        for res in (self.first, self.second):
            if res is not None and res.outcome != Outcome.valid:
                return res.invalid_detail
        return None

    @property
    def raw_outputs(self) -> list[str]:
        return [self.first.raw_text] + ([self.second.raw_text] if self.second else [])


def combine(first: JudgeResult, second: JudgeResult | None) -> PairVerdict:
    """Merge the two orders. `second` judged (B, A), so its winner is flipped back first."""
    for label, res in (("first_order", first), ("second_order", second)):
        if res is not None and res.outcome != Outcome.valid:
            reason = f"{label}:{res.invalid_reason or 'invalid'}"
            return PairVerdict(Outcome.invalid, None, reason, first, second)
    if second is None:
        return PairVerdict(Outcome.valid, first.winner, None, first, None)
    w1, w2 = first.winner, _FLIP[second.winner or Winner.tie]
    winner = w1 if w1 == w2 else Winner.inconsistent
    return PairVerdict(Outcome.valid, winner, None, first, second)


def judge_pair(
    backend: Backend,
    context: ContextData,
    prompt: str,
    image_a: NormalizedImage,
    image_b: NormalizedImage,
    swap: bool,
) -> PairVerdict:
    first = backend.judge(context, prompt, image_a, image_b)
    second = backend.judge(context, prompt, image_b, image_a) if swap else None
    return combine(first, second)
