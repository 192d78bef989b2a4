"""Trust signals: raw confidence per backend, calibration (fitted per model version, never applied to
another), context quality by leave-one-out, and what the pipeline stores with each verdict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.enums import Outcome, Winner
from models.calibrations import current_calibration
from models.db import make_engine, session_scope, upgrade
from models.judgments import JudgmentSpec, get_judgment, record_judgments
from models.references import add_reference
from models.tenants import ensure_tenant
from models.users import ensure_user
from workers.backends.lite import LiteBackend
from workers.calibration import (
    MIN_PAIRS,
    Sample,
    coverage_curve,
    expected_calibration_error,
    fit,
    reliability,
    spearman,
)
from workers.confidence import raw_confidence, token_probability
from workers.drawing import DrawParams, draw_image
from workers.imaging import ImageLimits, ImageLoader, NormalizedImage
from workers.pipeline import Resources, ensure_context, run_judgment
from workers.position import combine
from workers.quality import assess_context
from workers.schemas import Dimension, JudgeResult, ReferenceExample, VerdictToken
from workers.store import ImageStore, StoreConfig
from workers.trust import CalibrationBook, fit_from_contexts, store_calibration, verdict_confidence


def _result(
    winner: Winner, a: float, b: float, p1: float | None = None, source: str | None = None
) -> JudgeResult:
    dims = [Dimension(name="x", reason="r", score_a=a / 2, score_b=b / 2)] * 2
    return JudgeResult(
        outcome=Outcome.valid,
        winner=winner,
        dimensions=dims,
        total_a=a,
        total_b=b,
        p_image_1=p1,
        p_source=source,
    )


# ------------------------------------------------------------------------------------- raw confidence


def test_lite_confidence_is_its_bradley_terry_probability_of_the_stated_winner() -> None:
    signals = raw_confidence(combine(_result(Winner.B, 10, 12, p1=0.2, source="bradley-terry"), None))
    assert signals is not None
    assert signals.source == "bradley-terry" and signals.p_raw == pytest.approx(0.8)
    assert signals.orders == 1 and signals.agreement is None
    assert signals.margin == pytest.approx(1.0)  # B leads by 2 points over 2 dimensions


def test_without_logprobs_the_score_margin_decides() -> None:
    signals = raw_confidence(combine(_result(Winner.A, 14, 10), None))
    assert signals is not None and signals.source == "margin"
    assert signals.p_raw == pytest.approx(1 / (1 + math.exp(-2.0)))  # a 2-point lead per dimension


def test_both_orders_average_their_probability_for_the_same_image() -> None:
    first = _result(Winner.A, 12, 10, p1=0.9, source="logprobs")
    second = _result(Winner.B, 10, 12, p1=0.3, source="logprobs")  # (B, A): Image 2 = A wins
    verdict = combine(first, second)
    assert verdict.winner == Winner.A
    signals = raw_confidence(verdict)
    assert signals is not None and signals.source == "logprobs"
    assert signals.p_raw == pytest.approx((0.9 + 0.7) / 2)
    assert signals.orders == 2 and signals.agreement is True


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (_result(Winner.tie, 10, 10), None),
        (_result(Winner.A, 12, 10), _result(Winner.A, 12, 10)),  # orders disagree: inconsistent
        (JudgeResult(outcome=Outcome.invalid, invalid_reason="missing_verdict"), None),
    ],
)
def test_no_stated_winner_no_confidence(first: JudgeResult, second: JudgeResult | None) -> None:
    verdict = combine(first, second)
    assert raw_confidence(verdict) is None
    assert verdict_confidence(verdict, None, None)["confidence"] is None


def test_token_probability_weighs_the_stated_digit_against_the_other() -> None:
    token = VerdictToken(
        token=" 2", logprob=math.log(0.6), top_logprobs={" 2": math.log(0.6), "1": math.log(0.3)}
    )
    assert token_probability(token, "2") == pytest.approx(0.6 / 0.9)
    assert token_probability(token, "1") == pytest.approx(0.3 / 0.9)
    lonely = VerdictToken(token="1", logprob=-0.01, top_logprobs={})
    assert token_probability(lonely, "1") == pytest.approx(1.0)
    assert token_probability(lonely, "2") is None


# ----------------------------------------------------------------------------------------- calibration


def _samples(rng: np.random.Generator, n: int, squash: float) -> list[Sample]:
    """Raw confidences that overstate the truth: the real probability is 0.5 + squash x (p - 0.5)."""
    out = []
    for _ in range(n):
        p = float(rng.uniform(0.5, 0.99))
        out.append(Sample(p_raw=p, quality=None, correct=bool(rng.random() < 0.5 + squash * (p - 0.5))))
    return out


def test_a_fitted_calibration_repairs_overconfidence() -> None:
    rng = np.random.default_rng(0)
    train, test = _samples(rng, 4000, 0.5), _samples(rng, 4000, 0.5)
    cal = fit(train, backend="lite", model_id="m", model_revision="1")
    hits = [s.correct for s in test]
    raw = expected_calibration_error([s.p_raw for s in test], hits)
    calibrated = expected_calibration_error([cal.apply(s.p_raw, None) for s in test], hits)
    assert raw > 0.08 and calibrated < 0.03


def test_context_quality_moves_the_calibrated_confidence() -> None:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(3000):  # the same raw confidence is right more often for users with a good context
        q = float(rng.uniform(0.3, 0.95))
        samples.append(Sample(p_raw=0.8, quality=q, correct=bool(rng.random() < q)))
    cal = fit(samples, backend="lite", model_id="m", model_revision="1")
    assert cal.apply(0.8, 0.9) > cal.apply(0.8, 0.6) + 0.15


def test_fitting_refuses_too_few_pairs_and_names_how_to_get_more() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_PAIRS}"):
        fit([Sample(0.7, None, True)] * (MIN_PAIRS - 1), backend="lite", model_id="m", model_revision="1")


def test_measures() -> None:
    conf, hits = [0.55, 0.65, 0.95, 0.95], [True, False, True, True]
    bins = reliability(conf, hits)
    assert [b.count for b in bins if b.count] == [1, 1, 2]
    assert expected_calibration_error(conf, hits) == pytest.approx((0.45 + 0.65 + 2 * 0.05) / 4)
    points = {p.threshold: p for p in coverage_curve(conf, hits)}
    assert points[0.9].coverage == 0.5 and points[0.9].accuracy == 1.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# ------------------------------------------------------------------------------------- context quality


def _image(tmp: Path, name: str, warmth: float, seed: int) -> ReferenceExample | Path:
    path = tmp / f"{name}.png"
    draw_image(
        DrawParams(
            warmth=warmth, saturation=0.5, brightness=0.5, clutter=0.3, centering=0.5, symmetry=0.5, seed=seed
        ),
        size=96,
    ).save(path)
    return path


@pytest.fixture
def warm_refs(tmp_path: Path) -> tuple[ImageLoader, list[ReferenceExample]]:
    """Eight references of a user who always chooses the warmer of two otherwise alike images."""
    loader = ImageLoader(ImageStore(StoreConfig(image_root=tmp_path)), ImageLimits())
    refs = []
    for i in range(8):
        _image(tmp_path, f"warm{i}", 0.85 + 0.01 * i, seed=i)
        _image(tmp_path, f"cold{i}", 0.15 - 0.01 * i, seed=i)  # same layout: the pair differs in warmth
        refs.append(ReferenceExample(f"p{i}", loader.load(f"warm{i}.png"), loader.load(f"cold{i}.png")))
    return loader, refs


def test_a_contradictory_reference_lowers_the_context_quality(
    warm_refs: tuple[ImageLoader, list[ReferenceExample]],
) -> None:
    _, refs = warm_refs
    backend = LiteBackend()
    clean = assess_context(backend, refs, backend.build_context(refs), swap=False)
    flipped = ReferenceExample("against", refs[1].rejected, refs[1].chosen)  # the colder image chosen
    noisy_refs = [*refs, flipped]
    noisy = assess_context(backend, noisy_refs, backend.build_context(noisy_refs), swap=False)
    assert clean is not None and noisy is not None
    assert clean.accuracy == 1.0 and clean.correct == clean.held_out == 8
    assert noisy.accuracy < clean.accuracy and noisy.score < clean.score
    assert noisy.per_reference[-1].correct is False  # the others predict the warmer image
    assert noisy.per_reference[-1].winner == "rejected"
    assert noisy.judge_model == backend.model_id and noisy.orders == 1 and noisy.agreement is None


class _Features(LiteBackend):
    """`lite` over given feature vectors (by image name), to state the flagging rule exactly."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.vectors = vectors

    def features(self, image: NormalizedImage) -> np.ndarray:
        return self.vectors[image.sha256]


def _stub(name: str) -> NormalizedImage:
    return NormalizedImage(sha256=name, uri=name, width=1, height=1, format="PNG", size_bytes=1, image=None)  # type: ignore[arg-type]


def test_a_rationale_that_predicts_none_of_the_held_out_choices_is_flagged() -> None:
    vectors, refs = {}, []
    for i in range(8):  # the user always chooses the warmer image; the pairs differ in nothing else
        warm, cold = np.full(8, 0.5), np.full(8, 0.5)
        warm[0], cold[0] = 0.8 + 0.01 * i, 0.2
        vectors[f"w{i}"], vectors[f"c{i}"] = warm, cold
        refs.append(ReferenceExample(f"p{i}", _stub(f"w{i}"), _stub(f"c{i}")))
    backend = _Features(vectors)
    against = ReferenceExample("against", _stub("c0"), _stub("w0"))
    noisy_refs = [*refs, against]
    context = backend.build_context(noisy_refs)
    assert "goes against their usual pattern" in context.rationales[-1]  # it names no feature
    quality = assess_context(backend, noisy_refs, context, swap=False)
    assert quality is not None
    assert quality.flagged == [8]  # ...so it predicts none of the other choices; the warm ones predict all
    assert quality.flag_rule == "the features its rationale names"
    clean = assess_context(backend, refs, backend.build_context(refs), swap=False)
    assert clean is not None and clean.flagged == []


def test_one_reference_has_no_quality(warm_refs: tuple[ImageLoader, list[ReferenceExample]]) -> None:
    _, refs = warm_refs
    backend = LiteBackend()
    assert assess_context(backend, refs[:1], backend.build_context(refs[:1]), swap=False) is None


# -------------------------------------------------------------------------- the pipeline and the ledger


@pytest.fixture
def res(tmp_path: Path, warm_refs: tuple[ImageLoader, list[ReferenceExample]]) -> Resources:
    loader, _ = warm_refs
    url = f"sqlite:///{tmp_path / 'trust.db'}"
    upgrade(url)
    backend = LiteBackend()
    _image(tmp_path, "test-warm", 0.8, seed=500)
    _image(tmp_path, "test-cold", 0.2, seed=501)
    return Resources(
        db=make_engine(url),
        loader=loader,
        backend_for=lambda name, protocol=None: backend,
        calibrations=CalibrationBook(refresh_s=0.001),
    )


def _user_with_refs(res: Resources, flipped: bool = False) -> int:
    with session_scope(res.db) as session:
        tenant = ensure_tenant(session=session, name="default")
        user = ensure_user(session=session, tenant_id=tenant.id, external_id="u")  # type: ignore[arg-type]
        assert user.id is not None
        for i in range(8):
            add_reference(
                session=session,
                user_id=user.id,
                prompt=f"p{i}",
                chosen_uri=f"warm{i}.png",
                rejected_uri=f"cold{i}.png",
            )
        if flipped:
            add_reference(
                session=session, user_id=user.id, prompt="x", chosen_uri="cold0.png", rejected_uri="warm0.png"
            )
        return user.id


def _judge(res: Resources) -> int:
    with session_scope(res.db) as session:
        [jid] = record_judgments(
            session=session,
            specs=[
                JudgmentSpec(
                    tenant="default", user="u", prompt="x", image_a="test-warm.png", image_b="test-cold.png"
                )
            ],
        )
    run_judgment(res=res, judgment_id=jid, token=f"t{jid}")
    return jid


def _save(res: Resources, revision: str, slope: float) -> str:
    samples = [Sample(0.9, 0.9, True)] * 40 + [Sample(0.9, 0.9, False)] * 10
    cal = fit(samples, backend="lite", model_id=LiteBackend.model_id, model_revision=revision)
    cal = cal.model_copy(update={"slope": slope, "source": "test"})
    store_calibration(res.db, cal, {})
    return cal.version


def test_the_context_stores_its_quality_and_the_verdict_its_raw_confidence(res: Resources) -> None:
    user_id = _user_with_refs(res, flipped=True)
    row, _ = ensure_context(res=res, backend=res.backend_for("lite", None), user_id=user_id)
    assert row.quality is not None and row.quality["held_out"] == 9 and row.quality["correct"] == 8
    assert row.quality["per_reference"][8]["winner"] == "rejected"  # the flipped one
    jid = _judge(res)
    with session_scope(res.db) as session:
        judgment = get_judgment(session=session, judgment_id=jid)
    assert judgment is not None and judgment.winner == Winner.A
    assert judgment.calibration_version is None  # no calibration stored: raw, marked uncalibrated
    assert judgment.confidence == judgment.confidence_raw and judgment.confidence is not None
    assert 0.5 < judgment.confidence < 1.0
    assert judgment.confidence_signals is not None
    assert judgment.confidence_signals["source"] == "bradley-terry"
    assert judgment.confidence_signals["context_quality"] == pytest.approx((8 + 1) / (9 + 2))


def test_a_calibration_of_another_model_version_is_never_applied(res: Resources) -> None:
    _user_with_refs(res)
    _save(res, revision="0-older", slope=0.1)  # lite's revision is "1": this one is another version's
    first = _judge(res)
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=first)
        assert (
            current_calibration(
                session=session, backend="lite", model_id=LiteBackend.model_id, model_revision="1"
            )
            is None
        )
    assert row is not None and row.calibration_version is None and row.confidence == row.confidence_raw
    version = _save(res, revision="1", slope=0.1)  # now one for this version: applied to the next verdict
    with session_scope(res.db) as session:
        [second] = record_judgments(
            session=session,
            specs=[
                JudgmentSpec(
                    tenant="default", user="u", prompt="y", image_a="test-warm.png", image_b="test-cold.png"
                )
            ],
        )
    run_judgment(res=res, judgment_id=second, token="t2")
    with session_scope(res.db) as session:
        row2 = get_judgment(session=session, judgment_id=second)
    assert row2 is not None and row2.calibration_version == version
    assert row2.confidence is not None and row2.confidence_raw is not None
    assert row2.confidence != row2.confidence_raw  # the flat slope pulls it toward its base rate


def test_calibrations_are_fitted_per_judge_version_from_stored_leave_one_out_checks(res: Resources) -> None:
    ids = []
    with session_scope(res.db) as session:
        tenant = ensure_tenant(session=session, name="default")
        assert tenant.id is not None
        for u in range(6):  # six users, eight references each (one in four against the rest): 48 pairs
            user = ensure_user(session=session, tenant_id=tenant.id, external_id=f"u{u}")
            assert user.id is not None
            ids.append(user.id)
            for i in range(8):
                c, r = (f"warm{i}.png", f"cold{i}.png") if (i + u) % 4 else (f"cold{i}.png", f"warm{i}.png")
                add_reference(session=session, user_id=user.id, prompt=f"p{i}", chosen_uri=c, rejected_uri=r)
    for uid in ids:
        ensure_context(res=res, backend=res.backend_for("lite", None), user_id=uid)
    fitted, notes = fit_from_contexts(res.db, "lite")
    assert notes == []
    [one] = fitted
    assert one.calibration.model_revision == LiteBackend.model_revision and one.calibration.pairs == 48
    assert one.users == 6
    with session_scope(res.db) as session:
        row = current_calibration(
            session=session, backend="lite", model_id=LiteBackend.model_id, model_revision="1"
        )
    assert row is not None and row.version == one.calibration.version
    assert res.calibrations.get(res.db, "lite", LiteBackend.model_id, "1") is not None
    assert res.calibrations.get(res.db, "lite", LiteBackend.model_id, "2") is None


# ------------------------------------------------------------------------------- review: edge cases


def test_a_failed_calibration_lookup_never_fails_a_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no calibration table: the query fails
    book = CalibrationBook(refresh_s=60)
    assert book.get(unmigrated, "lite", "m", "1") is None
    assert "not looked up" in caplog.text


def test_pairs_all_judged_right_are_refused_not_fitted_to_certainty() -> None:
    with pytest.raises(ValueError, match="nothing to calibrate against"):
        fit([Sample(0.7, 0.9, True)] * 50, backend="lite", model_id="m", model_revision="1")


def test_a_calibration_fitted_on_one_kind_of_signal_is_not_applied_to_another() -> None:
    samples = [Sample(0.9, None, True)] * 40 + [Sample(0.9, None, False)] * 20
    on_margins = fit(samples, backend="lite", model_id="m", model_revision="1", signal="margin")
    verdict = combine(_result(Winner.A, 12, 10, p1=0.9, source="bradley-terry"), None)
    stored = verdict_confidence(verdict, on_margins, None)
    assert stored["calibration_version"] is None and stored["confidence"] == stored["confidence_raw"] == 0.9
    on_bt = fit(samples, backend="lite", model_id="m", model_revision="1", signal="bradley-terry", orders=1)
    applied = verdict_confidence(verdict, on_bt, None)
    assert applied["calibration_version"] == on_bt.version and applied["confidence"] != 0.9
    assert len(on_bt.model_copy(update={"model_id": "/m/" + "x" * 400}).version) <= 200  # fits the column


def test_a_repeated_judge_message_returns_the_stored_confidence(res: Resources) -> None:
    _user_with_refs(res)
    jid = _judge(res)
    again = run_judgment(res=res, judgment_id=jid, token="another")
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=jid)
    assert again.skipped and row is not None
    assert again.confidence == row.confidence is not None


def test_a_requeued_or_failed_verdict_keeps_no_confidence(res: Resources) -> None:
    from models.claims import close_with_error
    from models.rescoring import archive_and_requeue

    _user_with_refs(res)
    jid = _judge(res)
    with session_scope(res.db) as session:
        assert archive_and_requeue(session=session, judgment_id=jid, reason="flagged", run_id=None)
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=jid)
        assert row is not None and row.status == "queued"
        assert (row.confidence, row.confidence_raw, row.calibration_version) == (None, None, None)
        row.confidence = 0.9  # as if a verdict had been written, then the row failed
        session.add(row)
    with session_scope(res.db) as session:
        assert close_with_error(session=session, judgment_id=jid, status="failed", code="x", message="y")
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=jid)
        assert row is not None and row.confidence is None
