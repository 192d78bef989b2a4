"""Trust signals of the judged backends: how well their confidence is calibrated, measured on test pairs.

Per backend (never the baselines), from the ledger's test verdicts (`bench.accuracy.queue`):

- the verdicts WITH a confidence (a stated winner) are measured; ties, disagreeing orders, invalid
  output, judgments that could not run and verdicts stored before confidences existed are counted by
  reason and left out of every calibration measure;
- cross-fitting: users are split into two folds by a seeded shuffle; a calibration
  (`workers.calibration.fit`: raw confidence and the user's context quality) is fitted on one fold's
  verdicts and applied to the other's, and vice versa, so every verdict gets a calibrated confidence
  from a map that never saw its user;
- expected calibration error (10 equal-width bins) of the raw confidence, of the confidence as stored
  in the ledger (whatever calibration was active when it was judged) and of the cross-fitted one;
  reliability bins; accuracy and coverage above confidence thresholds;
- Spearman's rank correlation between each user's context quality score and the user's accuracy on
  the test pairs (accuracy with tie, over all of the user's test pairs).

`save_calibrations` fits one calibration on ALL test verdicts of a backend and stores it
(`pigreward bench accuracy --save-calibration`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from bench.accuracy.metrics import Outcome
from core.enums import JudgmentStatus
from workers.calibration import (
    MIN_PAIRS,
    Calibration,
    Sample,
    coverage_curve,
    expected_calibration_error,
    fit,
    reliability,
    spearman,
)
from workers.trust import store_calibration

BINS = 10
THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
HEADLINE_THRESHOLD = 0.8
FOLDS = 2
UNCALIBRATED = "uncalibrated"


@dataclass
class BinStat:
    """One reliability bin: verdicts whose confidence falls in [lower, upper)."""

    lower: float
    upper: float
    count: int
    confidence: float | None  # mean confidence
    accuracy: float | None  # share correct


@dataclass
class CoverageStat:
    """The verdicts at or above a confidence threshold: their share (coverage) and accuracy."""

    threshold: float
    coverage: float
    count: int
    accuracy: float | None


@dataclass
class ConfidenceMeasure:
    """One confidence (raw, as stored, cross-fitted) measured against whether the verdict was right."""

    ece: float | None
    reliability: list[BinStat]
    coverage: list[CoverageStat]

    def at(self, threshold: float) -> CoverageStat | None:
        return next((c for c in self.coverage if math.isclose(c.threshold, threshold)), None)


@dataclass
class UserQuality:
    """A user's context quality score next to the user's test accuracy (the Spearman points)."""

    user: str
    quality: float
    accuracy: float
    tests: int


@dataclass
class CalibrationResult:
    """Everything measured about one backend's confidence; `AccuracyReport.calibration` holds one each."""

    method: str
    verdicts: int  # test pairs
    with_confidence: int
    without_confidence: dict[str, int]  # reason -> verdicts left out of the calibration measures
    accuracy: float | None  # share correct among the verdicts with a confidence
    sources: dict[str, int]  # how the raw confidences were computed (bradley-terry, logprobs, margin)
    calibration_versions: dict[str, int]  # calibration active when judged ("uncalibrated": none)
    raw: ConfidenceMeasure
    stored: ConfidenceMeasure
    cross_fitted: ConfidenceMeasure | None
    cross_fit_note: str | None  # why there is no cross-fitted calibration
    fold_users: list[int]
    fold_verdicts: list[int]
    spearman: float | None
    spearman_users: int
    spearman_note: str | None  # why the correlation is undefined
    users: list[UserQuality] = field(default_factory=list)
    saved_calibration: str | None = None  # --save-calibration: the version stored
    save_note: str | None = None

    @property
    def headline(self) -> tuple[str, ConfidenceMeasure]:
        """The confidence the summary quotes: cross-fitted where it could be fitted, else as stored."""
        if self.cross_fitted is not None:
            return "cross-fitted", self.cross_fitted
        return "as stored", self.stored


# ------------------------------------------------------------------------------------------ measures


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def measure(
    confidence: Sequence[float], correct: Sequence[bool], thresholds: Sequence[float] = THRESHOLDS
) -> ConfidenceMeasure:
    """ECE (10 equal-width bins), the reliability bins and the coverage-vs-accuracy points."""
    bins = [BinStat(**b.model_dump()) for b in reliability(confidence, correct, BINS)]
    cover = [CoverageStat(**c.model_dump()) for c in coverage_curve(confidence, correct, thresholds)]
    return ConfidenceMeasure(_finite(expected_calibration_error(confidence, correct, BINS)), bins, cover)


def reason_without_confidence(o: Outcome) -> str | None:
    """Why a verdict has no confidence (None: it has one): tie, inconsistent, invalid, not recorded
    (judged before confidences were stored), or the status of a judgment that gave no verdict."""
    if o.status == JudgmentStatus.done:
        if o.winner in ("tie", "inconsistent"):
            return str(o.winner)
        if o.trust is None or o.trust.confidence is None or o.trust.confidence_raw is None:
            return "not recorded"
        return None
    return str(o.status)


def fold_of_users(users: Sequence[str], seed: int) -> dict[str, int]:
    """Users split into `FOLDS` folds by a seeded shuffle (fold sizes differ by at most one)."""
    order = list(dict.fromkeys(users))
    rng = np.random.default_rng([seed, 0xCA1])
    shuffled = [order[i] for i in rng.permutation(len(order))]
    return {u: i % FOLDS for i, u in enumerate(shuffled)}


def cross_fit(
    users: Sequence[str], samples: Sequence[Sample], *, seed: int
) -> tuple[list[float] | None, str | None, list[int], list[int]]:
    """Each sample's confidence from a calibration fitted on the OTHER fold of users.

    Returns (calibrated confidences aligned with `samples`, or None; why not; users per fold;
    samples per fold). A fold with fewer than `MIN_PAIRS` samples cannot be fitted.
    """
    folds = fold_of_users(users, seed)
    fold_users = [sum(1 for f in folds.values() if f == k) for k in range(FOLDS)]
    fold_samples = [sum(1 for u in users if folds[u] == k) for k in range(FOLDS)]
    if len(folds) < FOLDS:
        note = f"{len(folds)} user(s) with a confidence: cross-fitting needs 2 or more"
        return None, note, fold_users, fold_samples
    if min(fold_samples) < MIN_PAIRS:
        return (
            None,
            f"a fold of users has {min(fold_samples)} verdicts with a confidence; fitting needs "
            f"{MIN_PAIRS} in each fold ({' + '.join(map(str, fold_samples))})",
            fold_users,
            fold_samples,
        )
    out: list[float] = [math.nan] * len(samples)
    for k in range(FOLDS):
        train = [s for u, s in zip(users, samples, strict=True) if folds[u] != k]
        calibration = fit(
            train, backend="bench", model_id="cross-fit", model_revision=str(k), source="cross-fit"
        )
        for i, (u, s) in enumerate(zip(users, samples, strict=True)):
            if folds[u] == k:
                out[i] = calibration.apply(s.p_raw, s.quality)
    return out, None, fold_users, fold_samples


def _user_quality(outcomes: Sequence[Outcome]) -> list[UserQuality]:
    """Per user with a context quality: that score (the most common one over the user's verdicts)
    and the user's accuracy with tie over all of the user's test pairs."""
    qualities: dict[str, Counter[float]] = {}
    tests: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for o in outcomes:
        tests[o.user] += 1
        correct[o.user] += o.correct
        if o.trust is not None and o.trust.context_quality is not None:
            qualities.setdefault(o.user, Counter())[o.trust.context_quality] += 1
    return [
        UserQuality(user=u, quality=q.most_common(1)[0][0], accuracy=correct[u] / tests[u], tests=tests[u])
        for u, q in qualities.items()
    ]


def calibration_result(method: str, outcomes: Sequence[Outcome], *, seed: int = 0) -> CalibrationResult:
    """Every calibration measure of one backend's test verdicts (see the module docstring)."""
    without: Counter[str] = Counter()
    users: list[str] = []
    samples: list[Sample] = []
    stored: list[float] = []
    sources: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for o in outcomes:
        reason = reason_without_confidence(o)
        if reason is not None:
            without[reason] += 1
            continue
        assert o.trust is not None and o.trust.confidence is not None and o.trust.confidence_raw is not None
        users.append(o.user)
        samples.append(
            Sample(p_raw=o.trust.confidence_raw, quality=o.trust.context_quality, correct=o.correct)
        )
        stored.append(o.trust.confidence)
        sources[o.trust.source or "unknown"] += 1
        versions[o.trust.calibration_version or UNCALIBRATED] += 1
    hits = [s.correct for s in samples]
    crossed, note, fold_users, fold_samples = cross_fit(users, samples, seed=seed)
    per_user = _user_quality(outcomes)
    rho = spearman([u.quality for u in per_user], [u.accuracy for u in per_user])
    if rho is not None:
        rho_note = None
    elif len(per_user) < 3:
        rho_note = (
            f"{len(per_user)} user(s) with a context quality: needs 3 or more "
            "(is PIGREWARD_CONTEXT_QUALITY on for this backend?)"
        )
    else:
        rho_note = "no spread in context quality or in users' accuracy"
    return CalibrationResult(
        method=method,
        verdicts=len(outcomes),
        with_confidence=len(samples),
        without_confidence=dict(sorted(without.items())),
        accuracy=sum(hits) / len(hits) if hits else None,
        sources=dict(sources.most_common()),
        calibration_versions=dict(versions.most_common()),
        raw=measure([s.p_raw for s in samples], hits),
        stored=measure(stored, hits),
        cross_fitted=measure(crossed, hits) if crossed is not None else None,
        cross_fit_note=note,
        fold_users=fold_users,
        fold_verdicts=fold_samples,
        spearman=None if rho is None else round(rho, 6),
        spearman_users=len(per_user),
        spearman_note=rho_note,
        users=per_user,
    )


def calibration_results(
    outcomes: Mapping[str, Sequence[Outcome]], kinds: Mapping[str, str], *, seed: int = 0
) -> list[CalibrationResult]:
    """One result per judged backend (kind ``backend``), in the order of `outcomes`."""
    return [
        calibration_result(m, outs, seed=seed) for m, outs in outcomes.items() if kinds.get(m) == "backend"
    ]


# ------------------------------------------------------------------------------------------ summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def trust_line(c: CalibrationResult) -> str:
    """The summary's figures for one backend: cross-fitted ECE, accuracy at confidence >= 0.8 against
    overall, and Spearman(context quality, user accuracy)."""
    if c.with_confidence == 0:
        return f"{c.method}: no verdict carries a confidence ({_reasons(c)})"
    if c.cross_fitted is not None and c.cross_fitted.ece is not None:
        ece = f"ECE {c.cross_fitted.ece:.3f} (cross-fitted)"
    else:
        stored = "n/a" if c.stored.ece is None else f"{c.stored.ece:.3f}"
        ece = f"ECE n/a (cross-fitted: {c.cross_fit_note}); ECE {stored} as stored"
    kind, m = c.headline
    point = m.at(HEADLINE_THRESHOLD)
    label = f"accuracy at confidence >= {HEADLINE_THRESHOLD:g}"
    if kind != "cross-fitted":
        label += f" ({kind})"
    if point is None or point.accuracy is None or c.accuracy is None:
        at = f"{label}: n/a (no verdict) vs {_pct(c.accuracy)} overall"
    else:
        gain = 100 * (point.accuracy - c.accuracy)
        at = (
            f"{label}: {_pct(point.accuracy)} vs {_pct(c.accuracy)} overall "
            f"({gain:+.1f} points, {100 * point.coverage:.0f}% of verdicts)"
        )
    if c.spearman is not None:
        rho = f"Spearman(context quality, user accuracy) {c.spearman:.2f} over {c.spearman_users} users"
    else:
        rho = f"Spearman(context quality, user accuracy) n/a ({c.spearman_note})"
    return f"{c.method}: {ece}; {at}; {rho}"


def _reasons(c: CalibrationResult) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in c.without_confidence.items()) or "no verdicts"


def excluded_text(c: CalibrationResult) -> str:
    """How many verdicts carry a confidence, and why the others do not."""
    if not c.without_confidence:
        return f"All {c.verdicts} verdicts carry a confidence"
    return (
        f"{c.with_confidence} of {c.verdicts} verdicts carry a confidence; left out of the calibration "
        f"measures: {_reasons(c)}"
    )


def versions_text(c: CalibrationResult) -> str:
    """Which calibrations were active when the verdicts were judged."""
    if not c.calibration_versions:
        return "n/a"
    if list(c.calibration_versions) == [UNCALIBRATED]:
        return UNCALIBRATED
    return "; ".join(f"{v} ({n})" for v, n in c.calibration_versions.items())


# ------------------------------------------------------------------------------------------ saving


def _bench_samples(outcomes: Sequence[Outcome]) -> dict[tuple[str, str, str], list[Sample]]:
    """A backend's test verdicts with a confidence, by (judge model, revision, raw signal)."""
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for o in outcomes:
        if reason_without_confidence(o) is not None or o.trust is None or o.trust.confidence_raw is None:
            continue
        key = (o.trust.judge_model or "", o.trust.model_revision or "", o.trust.source or "any")
        groups.setdefault(key, []).append(
            Sample(p_raw=o.trust.confidence_raw, quality=o.trust.context_quality, correct=o.correct)
        )
    return groups


def bench_calibration(
    outcomes: Sequence[Outcome], *, backend: str, source: str
) -> tuple[list[Calibration], list[str]]:
    """One calibration per judge model version, fitted on ALL of a backend's test verdicts with a
    confidence; notes for versions with too few."""
    notes: list[str] = []
    fitted = _fit_groups(_bench_samples(outcomes), backend, source, notes)
    return [calibration for calibration, _ in fitted], notes


def _fit_groups(
    groups: dict[tuple[str, str, str], list[Sample]], backend: str, source: str, notes: list[str]
) -> list[tuple[Calibration, list[Sample]]]:
    """Fit each group (notes get the ones that cannot be fitted); each calibration with its samples."""
    fitted = []
    for (model_id, revision, signal), samples in sorted(groups.items()):
        try:
            calibration = fit(
                samples,
                backend=backend,
                model_id=model_id,
                model_revision=revision,
                source=source,
                signal=signal,
            )
        except ValueError as exc:
            notes.append(str(exc))
            continue
        fitted.append((calibration, samples))
    if not groups:
        notes.append("no verdict with a confidence")
    return fitted


def save_calibrations(
    results: Sequence[CalibrationResult],
    outcomes: Mapping[str, Sequence[Outcome]],
    backends: Mapping[str, str],
    *,
    dataset: str,
    engine: sa.Engine,
) -> None:
    """Fit on all test verdicts of each judged backend and store it (`models.calibrations`); each
    result records the version stored (`saved_calibration`) or why none was (`save_note`).

    `backends` maps a method label (``lite:swap``) to its backend name (``lite``). The newest
    calibration of a model version is the one workers apply.
    """
    for result in results:
        outs = outcomes[result.method]
        notes: list[str] = []
        groups = _bench_samples(outs)
        versions = []
        for calibration, samples in _fit_groups(groups, backends[result.method], f"bench:{dataset}", notes):
            hits = [s.correct for s in samples]
            metrics = {
                "method": result.method,
                "users": len({o.user for o in outs}),
                "accuracy": result.accuracy,
                "ece_raw": _finite(expected_calibration_error([s.p_raw for s in samples], hits, BINS)),
                # on the pairs it was fitted on (as `pigreward calibrate fit` reports)
                "ece_calibrated": _finite(
                    expected_calibration_error(
                        [calibration.apply(s.p_raw, s.quality) for s in samples], hits, BINS
                    )
                ),
                "ece_cross_fitted": result.cross_fitted.ece if result.cross_fitted else None,
            }
            store_calibration(engine, calibration, metrics)
            versions.append(calibration.version)
        result.saved_calibration = "; ".join(versions) or None
        result.save_note = "; ".join(notes) or None
