"""Position-bias control: combining the (A, B) and (B, A) verdicts."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest

from workers.backends.lite import LiteBackend
from workers.drawing import DrawParams, draw_image
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.position import PairVerdict, combine, judge_pair
from workers.schemas import ContextData, JudgeResult, ReferenceExample


def valid(winner: str | None, raw: str = "") -> JudgeResult:
    return JudgeResult(outcome="valid", winner=winner, raw_text=raw or f"winner={winner}")  # type: ignore[arg-type]


def invalid(reason: str | None, raw: str = "garbled") -> JudgeResult:
    return JudgeResult(outcome="invalid", invalid_reason=reason, raw_text=raw)


# -------------------------------------------------------------------------------------- combine


@pytest.mark.parametrize("winner", ["A", "B", "tie"])
def test_single_order_passes_winner_through(winner: str) -> None:
    first = valid(winner)
    v = combine(first, None)
    assert isinstance(v, PairVerdict)
    assert (v.outcome, v.winner, v.invalid_reason) == ("valid", winner, None)
    assert v.first is first and v.second is None
    assert v.raw_outputs == [first.raw_text]


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # The second order judged (B, A): its "A" is our B, its "B" is our A.
        ("A", "B", "A"),
        ("B", "A", "B"),
        ("tie", "tie", "tie"),
        # Disagreements.
        ("A", "A", "inconsistent"),
        ("B", "B", "inconsistent"),
        ("A", "tie", "inconsistent"),
        ("tie", "A", "inconsistent"),
        ("tie", "B", "inconsistent"),
        ("B", "tie", "inconsistent"),
    ],
)
def test_two_orders(first: str, second: str, expected: str) -> None:
    one, two = valid(first), valid(second)
    v = combine(one, two)
    assert v.outcome == "valid"
    assert v.winner == expected
    assert v.invalid_reason is None
    assert v.first is one and v.second is two
    assert v.raw_outputs == [one.raw_text, two.raw_text]


def test_second_order_without_winner_counts_as_tie() -> None:
    assert combine(valid("tie"), valid(None)).winner == "tie"
    assert combine(valid("A"), valid(None)).winner == "inconsistent"


def test_first_order_invalid() -> None:
    v = combine(invalid("no_scores"), valid("B"))
    assert v.outcome == "invalid"
    assert v.winner is None
    assert v.invalid_reason == "first_order:no_scores"
    assert v.raw_outputs == ["garbled", "winner=B"]


def test_second_order_invalid() -> None:
    v = combine(valid("A"), invalid("unparseable"))
    assert v.outcome == "invalid"
    assert v.winner is None
    assert v.invalid_reason == "second_order:unparseable"


def test_both_invalid_reports_the_first() -> None:
    v = combine(invalid("r1"), invalid("r2"))
    assert v.outcome == "invalid"
    assert v.invalid_reason == "first_order:r1"


def test_single_order_invalid() -> None:
    v = combine(invalid("truncated"), None)
    assert (v.outcome, v.winner, v.invalid_reason) == ("invalid", None, "first_order:truncated")
    assert v.raw_outputs == ["garbled"]


def test_invalid_without_reason_still_has_one() -> None:
    assert combine(invalid(None), None).invalid_reason == "first_order:invalid"
    assert combine(valid("A"), invalid(None)).invalid_reason == "second_order:invalid"


def test_invalid_reason_prefix_is_parseable() -> None:
    v = combine(valid("A"), invalid("score_mismatch:1 vs 2"))
    assert v.invalid_reason is not None
    label, _, reason = v.invalid_reason.partition(":")
    assert label == "second_order"
    assert reason == "score_mismatch:1 vs 2"


# ----------------------------------------------------------------------------------- judge_pair


class ScriptedBackend:
    """Answers from a script and records the order in which images were passed."""

    name = "scripted"
    model_id = "scripted"
    model_revision = "0"
    template_version = "t"

    def __init__(self, answers: Sequence[JudgeResult]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str]] = []

    def build_context(self, references: Sequence[ReferenceExample]) -> ContextData:
        return ContextData(rationales=[])

    def judge(
        self, context: ContextData, prompt: str, image_1: NormalizedImage, image_2: NormalizedImage
    ) -> JudgeResult:
        self.calls.append((image_1.uri, image_2.uri))
        return self.answers[len(self.calls) - 1]

    def close(self) -> None:
        pass


def _image(warmth: float, seed: int) -> NormalizedImage:
    params = DrawParams(
        warmth=warmth, saturation=0.6, brightness=0.5, clutter=0.5, centering=0.5, symmetry=0.2, seed=seed
    )
    buf = io.BytesIO()
    draw_image(params, 48).save(buf, format="PNG")
    return normalize(buf.getvalue(), f"mem://{warmth}-{seed}", ImageLimits())


@pytest.fixture(scope="module")
def images() -> tuple[NormalizedImage, NormalizedImage]:
    return _image(0.9, 1), _image(0.1, 2)


def test_judge_pair_without_swap_judges_once(images: tuple) -> None:
    a, b = images
    backend = ScriptedBackend([valid("B")])
    v = judge_pair(backend, ContextData(rationales=[]), "p", a, b, swap=False)
    assert backend.calls == [(a.uri, b.uri)]
    assert (v.outcome, v.winner, v.second) == ("valid", "B", None)


def test_judge_pair_with_swap_passes_images_reversed(images: tuple) -> None:
    a, b = images
    backend = ScriptedBackend([valid("A"), valid("B")])
    v = judge_pair(backend, ContextData(rationales=[]), "p", a, b, swap=True)
    assert backend.calls == [(a.uri, b.uri), (b.uri, a.uri)]
    assert v.winner == "A"


def test_judge_pair_detects_position_bias(images: tuple) -> None:
    a, b = images
    always_first = ScriptedBackend([valid("A"), valid("A")])
    v = judge_pair(always_first, ContextData(rationales=[]), "p", a, b, swap=True)
    assert v.outcome == "valid"
    assert v.winner == "inconsistent"


def test_judge_pair_with_lite_is_order_consistent(images: tuple) -> None:
    warm, cool = images
    lite = LiteBackend()
    refs = [
        ReferenceExample(f"p{i}", _image(0.8 + 0.02 * i, 10 + i), _image(0.2 - 0.02 * i, 20 + i))
        for i in range(4)
    ]
    ctx = lite.build_context(refs)
    v = judge_pair(lite, ctx, "p", warm, cool, swap=True)
    assert v.outcome == "valid"
    assert v.winner == "A"
    assert v.second is not None and v.second.winner == "B"
    assert len(v.raw_outputs) == 2
    v2 = judge_pair(lite, ctx, "p", cool, warm, swap=True)
    assert v2.winner == "B"
