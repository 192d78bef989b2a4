"""The accuracy harness's trust section: cross-fitted calibration, ECE, coverage, Spearman, and the report.

Everything here runs on hand-made outcomes (no queue, no worker): `bench.accuracy.trust` is pure
but for `save_calibrations`, which is checked against a SQLite ledger.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.accuracy.format import load_benchmark
from bench.accuracy.metrics import Outcome, VerdictTrust
from bench.accuracy.report import render_markdown, render_summary, write_reports
from bench.accuracy.run import build_report
from bench.accuracy.synthetic import set_name, synthetic_jsonl
from bench.accuracy.trust import (
    THRESHOLDS,
    bench_calibration,
    calibration_result,
    calibration_results,
    cross_fit,
    fold_of_users,
    save_calibrations,
    trust_line,
)
from models.calibrations import list_calibrations
from models.db import make_engine, session_scope, upgrade
from pigreward.cli.bench import _refs_range, bench
from workers.calibration import Calibration, Sample

ECE_LINE = re.compile(r"ECE \d\.\d{3} \(cross-fitted\)")
AT_LINE = re.compile(
    r"accuracy at confidence >= 0\.8: \d+\.\d% vs \d+\.\d% overall \([+-]\d+\.\d points, \d+% of verdicts\)"
)
RHO_LINE = re.compile(r"Spearman\(context quality, user accuracy\) -?\d\.\d\d over \d+ users")


def _verdict(
    user: str, p: float, correct: bool, quality: float | None = 0.7, *, stored: float | None = None
) -> Outcome:
    """A decisive verdict for label A with raw confidence `p` (right when `correct`)."""
    trust = VerdictTrust(
        confidence=p if stored is None else stored,
        confidence_raw=p,
        source="bradley-terry",
        context_quality=quality,
        judge_model="lite-bradley-terry",
        model_revision="1",
    )
    return Outcome(user, "A", "A" if correct else "B", "done", judgment_id=None, trust=trust)


def calibrated_outcomes(users: int = 20) -> list[Outcome]:
    """Exactly calibrated for every user: at raw confidence p, exactly a share p of the user's 20
    verdicts at that level is right."""
    levels = (0.55, 0.65, 0.75, 0.85, 0.95)
    return [
        _verdict(f"u{u:02d}", p, (u + j) % 20 < round(20 * p))
        for u in range(users)
        for p in levels
        for j in range(20)
    ]


# ------------------------------------------------------------------------------------ measures


def test_perfectly_calibrated_confidence_has_ece_near_zero_raw_and_cross_fitted() -> None:
    outcomes = calibrated_outcomes()
    c = calibration_result("lite", outcomes, seed=0)
    assert c.with_confidence == len(outcomes) == 2000 and c.without_confidence == {}
    assert c.raw.ece is not None and c.raw.ece < 1e-9
    assert c.stored.ece == c.raw.ece
    assert c.cross_fitted is not None and c.cross_fitted.ece is not None and c.cross_fitted.ece < 0.02
    assert c.accuracy == pytest.approx(0.75)
    assert c.fold_users == [10, 10] and c.fold_verdicts == [1000, 1000]
    assert [p.threshold for p in c.cross_fitted.coverage] == list(THRESHOLDS)
    raw_at = {p.threshold: p for p in c.raw.coverage}
    assert raw_at[0.5].coverage == 1.0 and raw_at[0.8].coverage == pytest.approx(0.4)
    assert raw_at[0.8].accuracy == pytest.approx(0.9)  # levels 0.85 and 0.95
    assert raw_at[0.95].accuracy == pytest.approx(0.95)
    assert [b.count for b in c.raw.reliability if b.count] == [400] * 5


def test_cross_fitting_repairs_an_overconfident_raw_confidence() -> None:
    # raw says 0.95 or 0.6; the truth is 0.75 and 0.55
    outcomes = [
        _verdict(f"u{u}", p, (u + j) % 20 < k)
        for u in range(12)
        for p, k in ((0.95, 15), (0.6, 11))
        for j in range(20)
    ]
    c = calibration_result("lite", outcomes)
    assert c.raw.ece is not None and c.raw.ece > 0.1
    assert c.cross_fitted is not None and c.cross_fitted.ece is not None and c.cross_fitted.ece < 0.03


def test_each_fold_is_calibrated_by_the_other_fold_only() -> None:
    users = [f"u{i}" for i in range(10) for _ in range(20)]
    rng = np.random.default_rng(3)
    p = rng.uniform(0.5, 0.99, size=len(users))
    hits = rng.random(len(users)) < p
    samples = [Sample(float(x), 0.7, bool(h)) for x, h in zip(p, hits, strict=True)]
    first, note, fold_users, fold_samples = cross_fit(users, samples, seed=1)
    assert note is None and first is not None and fold_users == [5, 5] and fold_samples == [100, 100]
    folds = fold_of_users(users, 1)
    # flip every label of fold 0: fold 0's own confidences come from fold 1's map and do not move
    flipped = [
        Sample(s.p_raw, s.quality, not s.correct if folds[u] == 0 else s.correct)
        for u, s in zip(users, samples, strict=True)
    ]
    second, *_ = cross_fit(users, flipped, seed=1)
    assert second is not None
    same = [a == b for u, a, b in zip(users, first, second, strict=True) if folds[u] == 0]
    moved = [a != b for u, a, b in zip(users, first, second, strict=True) if folds[u] == 1]
    assert all(same) and all(moved)


def test_folds_are_a_seeded_shuffle_of_users() -> None:
    users = [f"u{i}" for i in range(11)]
    a, b, c = fold_of_users(users, 0), fold_of_users(users, 0), fold_of_users(users, 1)
    assert a == b and a != c and set(a) == set(users)
    assert sorted(list(a.values()).count(k) for k in (0, 1)) == [5, 6]


def test_verdicts_without_a_confidence_are_counted_and_left_out() -> None:
    outcomes = calibrated_outcomes(users=2) + [
        Outcome("u00", "A", "tie", trust=VerdictTrust(context_quality=0.7)),
        Outcome("u00", "A", "inconsistent", swap=True, trust=VerdictTrust(context_quality=0.7)),
        Outcome("u01", "A", None, "invalid", trust=VerdictTrust(context_quality=0.7)),
        Outcome("u01", "A", None, "failed"),
        Outcome("u02", "A", "A", trust=VerdictTrust(context_quality=0.7)),  # judged before confidences
    ]
    c = calibration_result("lite", outcomes)
    assert c.verdicts == 205 and c.with_confidence == 200
    assert c.without_confidence == {"failed": 1, "inconsistent": 1, "invalid": 1, "not recorded": 1, "tie": 1}
    assert c.accuracy == pytest.approx(0.75)  # of the verdicts with a confidence only
    assert c.calibration_versions == {"uncalibrated": 200} and c.sources == {"bradley-terry": 200}


def test_too_few_verdicts_say_why_there_is_no_cross_fitted_calibration() -> None:
    c = calibration_result("lite", [_verdict(f"u{i}", 0.9, i % 2 == 0) for i in range(20)])
    assert c.cross_fitted is None and "fitting needs 30 in each fold" in (c.cross_fit_note or "")
    line = trust_line(c)
    assert "ECE n/a (cross-fitted:" in line and "accuracy at confidence >= 0.8 (as stored): 50.0%" in line
    alone = calibration_result("lite", [_verdict("solo", 0.9, True)] * 40)
    assert alone.cross_fitted is None and "needs 2 or more" in (alone.cross_fit_note or "")
    none = calibration_result("lite", [Outcome("u", "A", "tie")])
    assert none.with_confidence == 0 and none.raw.ece is None
    assert trust_line(none) == "lite: no verdict carries a confidence (1 tie)"


def test_spearman_follows_the_sign_of_quality_against_accuracy() -> None:
    def users(sign: int) -> list[Outcome]:
        out = []
        for i in range(8):
            quality = 0.5 + sign * 0.05 * i
            out += [_verdict(f"u{i}", 0.8, j < 2 + i, quality) for j in range(10)]
        return out

    up, down = calibration_result("lite", users(1)), calibration_result("lite", users(-1))
    assert up.spearman == pytest.approx(1.0) and down.spearman == pytest.approx(-1.0)
    assert up.spearman_users == 8 and up.spearman_note is None
    assert {u.user: u.accuracy for u in up.users}["u3"] == pytest.approx(0.5)
    few = calibration_result("lite", [_verdict(f"u{i}", 0.8, True, 0.6 + i / 10) for i in range(2)])
    assert few.spearman is None and "2 user(s) with a context quality" in (few.spearman_note or "")
    flat = calibration_result("lite", [_verdict(f"u{i}", 0.8, True, None) for i in range(5)])
    assert flat.spearman is None and flat.spearman_users == 0


def test_only_judged_backends_get_a_calibration_section() -> None:
    outcomes = {"lite": calibrated_outcomes(4), "random": [Outcome("u00", "A", "A")]}
    results = calibration_results(outcomes, {"lite": "backend", "random": "baseline"})
    assert [r.method for r in results] == ["lite"]


def test_the_summary_line_states_the_three_figures() -> None:
    c = calibration_result("lite", calibrated_outcomes())
    line = trust_line(c)
    assert line.startswith("lite: ") and ECE_LINE.search(line) and RHO_LINE.search(line) is None
    assert AT_LINE.search(line), line
    assert "Spearman(context quality, user accuracy) n/a (no spread" in line  # every user has 0.7


# ------------------------------------------------------------------------------------ saving


def test_bench_calibration_fits_all_verdicts_per_model_version_and_is_stored(tmp_path: Path) -> None:
    outcomes = calibrated_outcomes(users=3)
    fitted, notes = bench_calibration(outcomes, backend="lite", source="bench:x")
    assert notes == [] and len(fitted) == 1
    cal = fitted[0]
    assert (cal.backend, cal.model_id, cal.model_revision, cal.source, cal.pairs) == (
        "lite",
        "lite-bradley-terry",
        "1",
        "bench:x",
        300,
    )
    assert abs(cal.apply(0.85, 0.7) - 0.85) < 0.05
    _, few = bench_calibration(outcomes[:10], backend="lite", source="bench:x")
    assert few and "at least 30" in few[0]

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    engine = make_engine(url)
    results = calibration_results({"lite:swap": outcomes}, {"lite:swap": "backend"})
    save_calibrations(results, {"lite:swap": outcomes}, {"lite:swap": "lite"}, dataset="syn", engine=engine)
    with session_scope(engine) as session:
        rows = list_calibrations(session=session)
        stored = [(r.version, r.backend, r.source, r.pairs, dict(r.metrics), dict(r.params)) for r in rows]
    assert len(stored) == 1
    version, backend, source, pairs, metrics, params = stored[0]
    assert results[0].saved_calibration == version and backend == "lite" and source == "bench:syn"
    assert pairs == 300 and Calibration.model_validate(params).version == version
    assert metrics["ece_cross_fitted"] == results[0].cross_fitted.ece  # type: ignore[union-attr]
    assert metrics["ece_raw"] is not None and metrics["ece_calibrated"] is not None


# ------------------------------------------------------------------------------------ report


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("trust-bench")
    path = synthetic_jsonl(
        root / "syn", users=6, seed=0, images=40, tests_per_user=20, min_refs=8, max_refs=10, image_size=16
    )
    return load_benchmark(path, root)


def _bench_outcomes(bench, confident: bool = True) -> list[Outcome]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    out = []
    for i, u in enumerate(bench.users):
        quality = 0.4 + 0.08 * i
        for t in u.tests:
            p = float(rng.uniform(0.5, 0.99))
            right = bool(rng.random() < p)
            winner = t.label if right else ("B" if t.label == "A" else "A")
            trust = VerdictTrust(p, p, None, "bradley-terry", quality) if confident else None
            out.append(Outcome(u.user, t.label, winner, trust=trust))
    return out


def test_the_report_holds_the_calibration_section_in_every_format(tmp_path: Path, tiny_bench) -> None:  # type: ignore[no-untyped-def]
    outcomes = {"lite": _bench_outcomes(tiny_bench), "random": _bench_outcomes(tiny_bench, False)}
    report = build_report(
        tiny_bench, outcomes, {"lite": "backend", "random": "baseline"}, tenant="t", seed=0, draws=50
    )
    files = write_reports(report, tmp_path / "out")
    c = report.calibration[0]
    assert [x.method for x in report.calibration] == ["lite"] and c.with_confidence == 120

    page = files["html"].read_text()
    assert page.count("<svg") == 5  # accuracy, references, users + a reliability diagram + coverage
    assert 'id="svg-reliability-0"' in page and 'id="svg-coverage"' in page
    assert "<script" not in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    head, shown = c.headline
    assert head == "cross-fitted"
    non_empty = sum(1 for b in shown.reliability if b.count)
    assert page.count('class="bin"') == non_empty and page.count('class="bin-count"') == non_empty
    assert page.count('class="bin-raw"') == sum(1 for b in c.raw.reliability if b.count)
    assert 'class="diagonal"' in page
    # one point per distinct set of verdicts kept: all of them, then each threshold that drops some
    assert page.count('class="coverage"') == len(
        {c.with_confidence} | {p.count for p in shown.coverage if p.count}
    )

    md = render_markdown(report)
    assert "## Confidence and calibration" in md and "### lite" in md and "### random" not in md
    section = md.split("Reliability (")[1].split("Accuracy above")[0]
    assert sum(1 for line in section.splitlines() if re.match(r"\| 0\.\d-", line)) == sum(
        1 for i in range(10) if shown.reliability[i].count or c.raw.reliability[i].count
    )
    summary = render_summary(report)
    assert ECE_LINE.search(summary) and RHO_LINE.search(summary), summary

    results = json.loads(files["results"].read_text())
    (cal,) = results["calibration"]
    assert cal["method"] == "lite" and cal["with_confidence"] == 120
    for key in ("raw", "stored", "cross_fitted"):
        assert math.isfinite(cal[key]["ece"]) and len(cal[key]["reliability"]) == 10
        assert [p["threshold"] for p in cal[key]["coverage"]] == list(THRESHOLDS)
    assert cal["spearman_users"] == 6 and -1.0 <= cal["spearman"] <= 1.0
    assert cal["calibration_versions"] == {"uncalibrated": 120}
    first = results["outcomes"]["lite"][0]
    assert first["confidence"] == first["confidence_raw"] and "context_quality" in first
    assert "confidence" not in results["outcomes"]["random"][0]


def test_a_backend_without_confidences_draws_no_calibration_plot(tmp_path: Path, tiny_bench) -> None:  # type: ignore[no-untyped-def]
    outcomes = {"lite": _bench_outcomes(tiny_bench, False)}
    report = build_report(tiny_bench, outcomes, {"lite": "backend"}, tenant="t", draws=20)
    files = write_reports(report, tmp_path / "out")
    page = files["html"].read_text()
    assert page.count("<svg") == 3 and "no verdict carries a confidence" in page
    assert "lite: no verdict carries a confidence (120 not recorded)" in render_summary(report)


# ------------------------------------------------------------------------------------ CLI and set


def test_reference_ranges() -> None:
    assert _refs_range("20-30") == (20, 30) and _refs_range(" 25 ") == (25, 25)
    for bad in ("x", "30-20", "1-2-3", "-3"):
        with pytest.raises(Exception, match="--references|MIN"):
            _refs_range(bad)


def test_synthetic_options_are_refused_with_an_input_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, ["accuracy", str(tmp_path / "x.jsonl"), "--tests-per-user", "5"])
    assert result.exit_code == 2 and "--tests-per-user only apply to --synthetic" in result.output


def test_set_names_keep_different_sets_apart() -> None:
    assert set_name(40, 0) == "synthetic-u40-s0-noise0.45"
    assert (
        set_name(6, 1, min_refs=8, max_refs=10, tests_per_user=20)
        == "synthetic-u6-s1-noise0.45-refs8-10-tests20"
    )
    # Bradley-Terry references with the generator's defaults: the name the demo-like set always had
    assert (
        set_name(20, 0, reference_noise=None, min_refs=5, max_refs=15, tests_per_user=10)
        == "synthetic-u20-s0"
    )
