"""`null`: a benchmark backend. An instant, fixed, valid verdict; no model, no pixels looked at.

It exists to measure the orchestration around a judgment (broker, ledger writes, image fetch and
normalization, context lookup) without any model time: `python -m bench.orchestration` judges
thousands of pairs with it. Its verdicts mean nothing; never use it to score real work. Contexts
are one fixed rationale per reference pair, built without touching the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.enums import Outcome, Winner
from core.errors import NoReferences
from workers.generation import ModelIdentity
from workers.imaging import NormalizedImage
from workers.schemas import ContextData, Dimension, JudgeResult, ReferenceExample

_DIMENSIONS = (
    Dimension(name="Composition", reason="benchmark backend: fixed score", score_a=4, score_b=3),
    Dimension(name="Color", reason="benchmark backend: fixed score", score_a=3, score_b=3),
    Dimension(name="Prompt fidelity", reason="benchmark backend: fixed score", score_a=4, score_b=2),
)
_RAW = "\n".join(
    [f"{d.name}: {d.reason} (Score 1: {d.score_a:g}, Score 2: {d.score_b:g})" for d in _DIMENSIONS]
    + ["Score 1: 4+3+4=11", "Score 2: 3+3+2=8", "Image 1 is better"]
)


class NullBackend:
    """Implements the backend protocol in constant time: always 'Image 1 is better', 11 vs 8."""

    name = "null"
    model_id = "null"
    model_revision = "1"
    template_version = "null-v1"
    context_version = "null-v1"

    @property
    def decoding(self) -> dict[str, Any]:
        """No model, no decoding: nothing to record."""
        return {}

    @property
    def context_identity(self) -> ModelIdentity:
        return ModelIdentity(self.model_id, self.model_revision)

    def build_context(self, references: Sequence[ReferenceExample]) -> ContextData:
        if not references:
            raise NoReferences("cannot build a context from zero reference pairs")
        return ContextData(
            rationales=[f"For '{r.prompt}' the user chose the first image." for r in references],
            payload={"references": len(references)},
        )

    def judge(
        self, context: ContextData, prompt: str, image_1: NormalizedImage, image_2: NormalizedImage
    ) -> JudgeResult:
        return JudgeResult(
            outcome=Outcome.valid,
            winner=Winner.A,
            dimensions=list(_DIMENSIONS),
            total_a=11,
            total_b=8,
            rationale="Image 1 is better (null benchmark backend: a fixed verdict).",
            raw_text=_RAW,
            timings={"backend_s": 0.0},
        )

    def close(self) -> None:
        return None
