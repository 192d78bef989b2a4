"""The `lite` backend: interpretable features and a per-user Bradley-Terry model that really learns."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest

from core.errors import NoReferences, PermanentError
from workers.backends.base import Backend
from workers.backends.lite import LiteBackend, fit_weights
from workers.drawing import DrawParams, draw_image
from workers.features import FEATURE_KEYS, FEATURES, extract
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.schemas import ContextData, JudgeResult, ReferenceExample

SIZE = 64
BASE: dict[str, Any] = dict(
    warmth=0.5, saturation=0.6, brightness=0.5, clutter=0.5, centering=0.5, symmetry=0.3, seed=1
)
EVIDENCE = re.compile(r"in (\d+) of (\d+) references")


def _params(**overrides: Any) -> DrawParams:
    return DrawParams(**{**BASE, **overrides})


def _image(**overrides: Any) -> NormalizedImage:
    """A synthetic picture, PNG-encoded and normalized like the pipeline does."""
    params = _params(**overrides)
    buf = io.BytesIO()
    draw_image(params, SIZE).save(buf, format="PNG")
    return normalize(buf.getvalue(), f"mem://{params.model_dump_json()}", ImageLimits())


def _feature(key: str, **overrides: Any) -> float:
    return float(extract(draw_image(_params(**overrides), SIZE))[FEATURE_KEYS.index(key)])


def _weights(ctx: ContextData) -> dict[str, float]:
    return dict(zip(ctx.payload["features"], ctx.payload["weights"], strict=True))


def _check_result(res: JudgeResult) -> None:
    """The invariants every lite verdict keeps."""
    assert isinstance(res, JudgeResult)
    assert res.outcome == "valid"
    assert 3 <= len(res.dimensions) <= 5
    assert len({d.name for d in res.dimensions}) == len(res.dimensions)
    assert {d.name for d in res.dimensions} <= {f.title for f in FEATURES}
    assert res.total_a == pytest.approx(sum(d.score_a for d in res.dimensions), abs=0.011)
    assert res.total_b == pytest.approx(sum(d.score_b for d in res.dimensions), abs=0.011)
    assert res.total_a is not None and res.total_b is not None
    if res.total_a > res.total_b:
        assert res.winner == "A"
    elif res.total_b > res.total_a:
        assert res.winner == "B"
    else:
        assert res.winner == "tie"
    assert res.rationale
    assert f"Score 1: {res.total_a}" in res.raw_text
    assert f"Score 2: {res.total_b}" in res.raw_text
    assert res.invalid_reason is None
    assert "backend_s" in res.timings


@pytest.fixture(scope="module")
def backend() -> LiteBackend:
    return LiteBackend()


@pytest.fixture(scope="module")
def warm_cool_pairs() -> list[tuple[NormalizedImage, NormalizedImage]]:
    """(warm, cool) pairs that share every other attribute, varied across pairs."""
    rng = np.random.default_rng(7)
    pairs = []
    for i in range(8):
        others = dict(
            saturation=rng.uniform(0.3, 0.9),
            brightness=rng.uniform(0.2, 0.8),
            clutter=rng.uniform(0.0, 1.0),
            centering=rng.uniform(0.0, 1.0),
            symmetry=rng.uniform(0.0, 1.0),
        )
        warm = _image(warmth=rng.uniform(0.75, 1.0), seed=10 + i, **others)
        cool = _image(warmth=rng.uniform(0.0, 0.25), seed=50 + i, **others)
        pairs.append((warm, cool))
    return pairs


@pytest.fixture(scope="module")
def warm_lover(backend: LiteBackend, warm_cool_pairs: list) -> ContextData:
    refs = [ReferenceExample(f"prompt {i}", w, c) for i, (w, c) in enumerate(warm_cool_pairs)]
    return backend.build_context(refs)


@pytest.fixture(scope="module")
def cool_lover(backend: LiteBackend, warm_cool_pairs: list) -> ContextData:
    refs = [ReferenceExample(f"prompt {i}", c, w) for i, (w, c) in enumerate(warm_cool_pairs)]
    return backend.build_context(refs)


@pytest.fixture(scope="module")
def new_warm_and_cool() -> tuple[NormalizedImage, NormalizedImage]:
    """A held-out pair: layouts and other attributes unlike any reference, and unlike each other."""
    warm = _image(
        warmth=0.9, saturation=0.5, brightness=0.4, clutter=0.7, centering=0.3, symmetry=0.2, seed=901
    )
    cool = _image(
        warmth=0.1, saturation=0.6, brightness=0.6, clutter=0.3, centering=0.6, symmetry=0.5, seed=902
    )
    return warm, cool


# ------------------------------------------------------------------------------------ features


def test_extract_shape_and_range() -> None:
    vec = extract(draw_image(_params(), SIZE))
    assert vec.shape == (len(FEATURES),) == (len(FEATURE_KEYS),)
    assert np.all(np.isfinite(vec))
    assert np.all(vec >= -0.01) and np.all(vec <= 1.01)


def test_extract_accepts_non_rgb_and_any_size() -> None:
    img = draw_image(_params(), 96)
    np.testing.assert_allclose(extract(img.convert("RGBA")), extract(img), atol=1e-6)
    assert extract(img.resize((40, 25))).shape == (len(FEATURES),)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warmth_feature_rises_with_warmth(seed: int) -> None:
    values = [_feature("warmth", warmth=w, seed=seed) for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert np.all(np.diff(values) > 0), values
    assert values[-1] - values[0] > 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brightness_feature_rises_with_brightness(seed: int) -> None:
    values = [_feature("brightness", brightness=b, seed=seed) for b in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert np.all(np.diff(values) > 0), values
    assert values[-1] - values[0] > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_other_features_follow_their_attributes(seed: int) -> None:
    assert _feature("detail", clutter=1.0, seed=seed) > _feature("detail", clutter=0.0, seed=seed)
    assert _feature("symmetry", symmetry=1.0, seed=seed) > _feature("symmetry", symmetry=0.0, seed=seed)
    assert _feature("saturation", saturation=1.0, seed=seed) > _feature(
        "saturation", saturation=0.0, seed=seed
    )
    assert _feature("centre_focus", centering=1.0, clutter=0.8, seed=seed) > _feature(
        "centre_focus", centering=0.0, clutter=0.8, seed=seed
    )


def test_warmth_feature_barely_moves_with_brightness() -> None:
    values = [_feature("warmth", brightness=b) for b in (0.2, 0.5, 0.8)]
    assert max(values) - min(values) < 0.1


# --------------------------------------------------------------------------------- fit_weights


def test_fit_weights_learns_the_sign_of_a_consistent_preference() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.0, 0.1, size=(10, 3))
    diffs[:, 1] = np.abs(diffs[:, 1]) + 1.0  # chosen is always higher on feature 1
    w = fit_weights(diffs)
    assert w[1] > 0.5
    assert abs(w[1]) > 3 * max(abs(w[0]), abs(w[2]))
    np.testing.assert_allclose(fit_weights(-diffs), -w, atol=1e-9)


def test_fit_weights_zero_evidence_gives_zero_weights() -> None:
    np.testing.assert_array_equal(fit_weights(np.zeros((4, 5))), np.zeros(5))


def test_fit_weights_is_regularised_on_separable_data() -> None:
    w = fit_weights(np.array([[1.0, 0.0]] * 50))
    assert np.all(np.isfinite(w))
    assert 0 < w[0] < 20
    assert w[1] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- build_context


def test_backend_satisfies_protocol(backend: LiteBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name == "lite"


def test_no_references_raises(backend: LiteBackend) -> None:
    with pytest.raises(NoReferences):
        backend.build_context([])
    assert issubclass(NoReferences, PermanentError)


def test_context_payload_shape(warm_lover: ContextData, warm_cool_pairs: list) -> None:
    p = warm_lover.payload
    assert p["features"] == list(FEATURE_KEYS)
    assert len(p["weights"]) == len(p["mean"]) == len(p["scale"]) == len(FEATURE_KEYS)
    assert all(s > 0 for s in p["scale"])
    assert p["references"] == len(warm_cool_pairs)
    assert set(p["evidence"]) == set(FEATURE_KEYS)
    assert len(warm_lover.rationales) == len(warm_cool_pairs)
    # The payload survives a JSON round trip (it is stored in the database).
    assert ContextData.model_validate_json(warm_lover.model_dump_json()) == warm_lover


def test_context_is_deterministic(
    backend: LiteBackend, warm_cool_pairs: list, warm_lover: ContextData
) -> None:
    refs = [ReferenceExample(f"prompt {i}", w, c) for i, (w, c) in enumerate(warm_cool_pairs)]
    again = LiteBackend().build_context(refs)
    assert again == warm_lover
    assert backend.build_context(refs) == warm_lover


def test_warm_lover_weights_warmth_most(warm_lover: ContextData, cool_lover: ContextData) -> None:
    ww, wc = _weights(warm_lover), _weights(cool_lover)
    assert ww["warmth"] > 0.5
    assert wc["warmth"] < -0.5
    assert max(ww, key=lambda k: abs(ww[k])) == "warmth"
    assert max(wc, key=lambda k: abs(wc[k])) == "warmth"
    n = len(warm_lover.rationales)
    assert warm_lover.payload["evidence"]["warmth"] == {"higher": n, "lower": 0, "informative": n}
    assert cool_lover.payload["evidence"]["warmth"] == {"higher": 0, "lower": n, "informative": n}


def test_reference_rationales_name_the_choice(warm_lover: ContextData, cool_lover: ContextData) -> None:
    for i, text in enumerate(warm_lover.rationales):
        assert text.startswith(f"For 'prompt {i}' the user chose the image that is ")
        assert "warmer" in text and "cooler" not in text
    for text in cool_lover.rationales:
        assert "cooler" in text and "warmer" not in text


def test_single_reference_is_enough(backend: LiteBackend, warm_cool_pairs: list) -> None:
    warm, cool = warm_cool_pairs[0]
    ctx = backend.build_context([ReferenceExample("one", warm, cool)])
    assert len(ctx.rationales) == 1
    assert ctx.payload["references"] == 1
    assert _weights(ctx)["warmth"] > 0
    # The one pair it has seen is judged the way the user chose, in both orders.
    res = backend.judge(ctx, "one", warm, cool)
    _check_result(res)
    assert res.winner == "A"
    assert backend.judge(ctx, "one", cool, warm).winner == "B"


def test_choice_against_pattern_is_explained(backend: LiteBackend, warm_cool_pairs: list) -> None:
    refs = [ReferenceExample(f"p{i}", w, c) for i, (w, c) in enumerate(warm_cool_pairs)]
    w, c = warm_cool_pairs[0]
    refs.append(ReferenceExample("odd one", c, w))  # this time the cooler one was chosen
    refs.append(ReferenceExample("no difference", w, w))  # nothing separates the two
    ctx = backend.build_context(refs)
    assert _weights(ctx)["warmth"] > 0
    assert ctx.rationales[-2].startswith("For 'odd one'")
    assert "warmer" not in ctx.rationales[-2] and "cooler" not in ctx.rationales[-2]
    assert ctx.rationales[-1].startswith("For 'no difference'")
    assert "against their usual pattern" in ctx.rationales[-1]
    evidence = ctx.payload["evidence"]["warmth"]
    assert evidence == {
        "higher": len(warm_cool_pairs),
        "lower": 1,
        "informative": len(warm_cool_pairs) + 1,
    }


# ------------------------------------------------------------------------------------ judging


def test_opposite_users_get_opposite_verdicts(
    backend: LiteBackend, warm_lover: ContextData, cool_lover: ContextData, new_warm_and_cool: tuple
) -> None:
    warm, cool = new_warm_and_cool
    for_warm = backend.judge(warm_lover, "a harbour at dawn", warm, cool)
    for_cool = backend.judge(cool_lover, "a harbour at dawn", warm, cool)
    _check_result(for_warm)
    _check_result(for_cool)
    assert for_warm.winner == "A"
    assert for_cool.winner == "B"
    # Order does not matter: the same images passed the other way round.
    assert backend.judge(warm_lover, "a harbour at dawn", cool, warm).winner == "B"
    assert backend.judge(cool_lover, "a harbour at dawn", cool, warm).winner == "A"


def test_verdict_is_mirrored_when_images_swap(
    backend: LiteBackend, warm_lover: ContextData, new_warm_and_cool: tuple
) -> None:
    warm, cool = new_warm_and_cool
    ab = backend.judge(warm_lover, "p", warm, cool)
    ba = backend.judge(warm_lover, "p", cool, warm)
    assert (ab.total_a, ab.total_b) == (ba.total_b, ba.total_a)
    assert [d.name for d in ab.dimensions] == [d.name for d in ba.dimensions]
    for d1, d2 in zip(ab.dimensions, ba.dimensions, strict=True):
        assert (d1.score_a, d1.score_b) == (d2.score_b, d2.score_a)


def test_warmth_dimension_scores_and_evidence(
    backend: LiteBackend, warm_lover: ContextData, cool_lover: ContextData, new_warm_and_cool: tuple
) -> None:
    warm, cool = new_warm_and_cool
    n = len(warm_lover.rationales)
    res = backend.judge(warm_lover, "p", warm, cool)
    dims = {d.name: d for d in res.dimensions}
    assert res.dimensions[0].name == "Warm palette"  # strongest dimension first
    warmth = dims["Warm palette"]
    assert warmth.score_a > warmth.score_b
    assert "Image 1 is warmer" in warmth.reason
    assert f"chose the warmer image in {n} of {n} references" in warmth.reason
    assert "warm palette" in res.rationale
    assert res.rationale.startswith("Image 1 is better for this user")
    assert f"in {n} of {n} references" in res.rationale

    res_c = backend.judge(cool_lover, "p", warm, cool)
    warmth_c = {d.name: d for d in res_c.dimensions}["Warm palette"]
    assert warmth_c.score_b > warmth_c.score_a
    assert f"chose the cooler image in {n} of {n} references" in warmth_c.reason
    assert res_c.rationale.startswith("Image 2 is better for this user")


def test_every_dimension_reason_cites_consistent_evidence(
    backend: LiteBackend, warm_lover: ContextData, new_warm_and_cool: tuple
) -> None:
    res = backend.judge(warm_lover, "p", *new_warm_and_cool)
    total = warm_lover.payload["references"]
    for d in res.dimensions:
        match = EVIDENCE.search(d.reason)
        assert match, d.reason
        count, informative = int(match.group(1)), int(match.group(2))
        assert 0 <= count <= informative <= total
        assert d.reason in res.raw_text


def test_bright_lover_prefers_a_new_bright_image(backend: LiteBackend) -> None:
    """References differ in everything at random; only brightness decides. A new pair must follow it."""
    rng = np.random.default_rng(11)

    def others() -> dict[str, float]:
        return dict(
            warmth=rng.uniform(0.0, 1.0),
            saturation=rng.uniform(0.2, 0.9),
            clutter=rng.uniform(0.0, 1.0),
            centering=rng.uniform(0.0, 1.0),
            symmetry=rng.uniform(0.0, 1.0),
        )

    refs = [
        ReferenceExample(
            "a bowl of fruit",
            _image(brightness=rng.uniform(0.65, 0.95), seed=200 + i, **others()),
            _image(brightness=rng.uniform(0.05, 0.35), seed=300 + i, **others()),
        )
        for i in range(10)
    ]
    ctx = backend.build_context(refs)
    weights = _weights(ctx)
    assert weights["brightness"] > 0.3
    assert ctx.payload["evidence"]["brightness"]["higher"] == 10
    shared = dict(warmth=0.4, saturation=0.5, clutter=0.5, centering=0.5, symmetry=0.4)
    bright = _image(brightness=0.85, seed=777, **shared)
    dark = _image(brightness=0.2, seed=778, **shared)
    res = backend.judge(ctx, "a lighthouse", dark, bright)
    _check_result(res)
    assert res.winner == "B"
    assert "Brightness" in {d.name for d in res.dimensions}
    assert "brighter image in 10 of 10 references" in res.raw_text
    # And a user with the opposite history disagrees.
    dark_lover = backend.build_context([ReferenceExample(r.prompt, r.rejected, r.chosen) for r in refs])
    assert backend.judge(dark_lover, "a lighthouse", dark, bright).winner == "A"


def test_identical_images_tie(
    backend: LiteBackend, warm_lover: ContextData, new_warm_and_cool: tuple
) -> None:
    warm, _ = new_warm_and_cool
    res = backend.judge(warm_lover, "p", warm, warm)
    _check_result(res)
    assert res.winner == "tie"
    assert res.total_a == res.total_b
    assert "Both images are equally good" in res.raw_text
    assert all("alike" in d.reason for d in res.dimensions)


def test_dimension_count_is_capped_at_five(backend: LiteBackend, new_warm_and_cool: tuple) -> None:
    n = len(FEATURE_KEYS)
    ctx = ContextData(
        rationales=["r"],
        payload={
            "features": list(FEATURE_KEYS),
            "weights": [1.0] * n,
            "mean": [0.5] * n,
            "scale": [0.1] * n,
            "evidence": {k: {"higher": 1, "lower": 0, "informative": 1} for k in FEATURE_KEYS},
            "references": 1,
        },
    )
    res = backend.judge(ctx, "p", *new_warm_and_cool)
    _check_result(res)
    assert len(res.dimensions) == 5


def test_dimension_count_is_at_least_three(
    backend: LiteBackend, warm_lover: ContextData, new_warm_and_cool: tuple
) -> None:
    n = len(FEATURE_KEYS)
    weights = [0.0] * n
    weights[FEATURE_KEYS.index("brightness")] = 2.0  # a single strong dimension
    payload = {**warm_lover.payload, "weights": weights}
    res = backend.judge(ContextData(rationales=[], payload=payload), "p", *new_warm_and_cool)
    _check_result(res)
    assert len(res.dimensions) == 3
    assert res.dimensions[0].name == "Brightness"


def test_feature_cache_by_content(backend: LiteBackend, new_warm_and_cool: tuple) -> None:
    warm, _ = new_warm_and_cool
    first = backend.features(warm)
    assert backend.features(warm) is first
    fresh = LiteBackend(cache_size=1)
    a = fresh.features(warm)
    fresh.features(new_warm_and_cool[1])  # evicts the first
    assert fresh.features(warm) is not a
    np.testing.assert_array_equal(fresh.features(warm), a)
    fresh.close()


# ------------------------------------------------------------------------------------ the reason


def test_the_reason_names_the_dimension_that_favours_the_winner() -> None:
    """Image 2 wins on the sum, yet the single largest contribution (dimension 7) favours Image 1:
    naming it would say "Image 2 is better, chiefly on X: Image 1 is more X"."""
    from core.enums import Winner
    from workers.backends.lite import leading_dimension

    dims, toward_1 = [7, 3, 5], [0.9, -0.6, -0.5]  # total -0.2: Image 2 wins
    assert leading_dimension(dims, toward_1, Winner.B) == 3
    assert leading_dimension(dims, toward_1, Winner.A) == 7
    assert leading_dimension(dims, [0.2, -0.5, 0.3], Winner.tie) == 3  # a tie: the largest either way


def test_every_reason_agrees_with_its_verdict(backend: LiteBackend, warm_lover: ContextData) -> None:
    rng = np.random.default_rng(11)
    checked = 0
    for i in range(40):
        a = _image(
            **{k: float(v) for k, v in zip(_ATTRS, rng.uniform(0, 1, len(_ATTRS)), strict=True)}, seed=300 + i
        )
        b = _image(
            **{k: float(v) for k, v in zip(_ATTRS, rng.uniform(0, 1, len(_ATTRS)), strict=True)}, seed=400 + i
        )
        res = backend.judge(warm_lover, "a scene", a, b)
        if res.winner not in ("A", "B"):
            continue
        named = next(d for d in res.dimensions if d.name.lower() in res.rationale.split(":")[0])
        winner_score, loser_score = (
            (named.score_a, named.score_b) if res.winner == "A" else (named.score_b, named.score_a)
        )
        assert winner_score >= loser_score, res.rationale
        checked += 1
    assert checked >= 30


_ATTRS = ("warmth", "saturation", "brightness", "clutter", "centering", "symmetry")
