"""Calibration: raw confidence -> the probability that the user really prefers the stated winner.

A calibration is fitted per backend and model version on held-out pairs (by default the
leave-one-out judgments of users' own references, `workers.quality`), and applied only to verdicts
of exactly that backend, model and revision: a new checkpoint needs a calibration of its own.

The map is Platt scaling with the user's context quality as a second input:
P = sigmoid(slope x logit(p_raw) + quality_slope x (quality - quality_mean) + intercept).
A verdict for a user whose references contradict each other is trusted less than the same margin for
a user whose references agree.

Also here: the measures that judge a calibration (expected calibration error, reliability bins,
accuracy above confidence thresholds) and Spearman's rank correlation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

MIN_PAIRS = 30
"""Fewer held-out pairs than this fit noise, not calibration: fitting refuses."""
L2 = 1.0
"""A weak Gaussian prior on the coefficients: keeps them finite on nearly separable pairs."""
LOGIT_CLIP = 8.0


@dataclass(frozen=True)
class Sample:
    """One held-out pair: the raw confidence of the stated winner, the user's context quality, and
    whether the stated winner was the user's choice."""

    p_raw: float
    quality: float | None
    correct: bool


class Calibration(BaseModel, frozen=True):
    """A fitted map, valid for one backend, model and revision."""

    backend: str
    model_id: str
    model_revision: str
    method: Literal["platt+quality"] = "platt+quality"
    slope: float
    quality_slope: float
    intercept: float
    quality_mean: float | None
    pairs: int = Field(ge=0)
    source: str = "leave-one-out"
    signal: str = "any"  # the raw confidence it was fitted on: bradley-terry | logprobs | margin
    orders: int = 0  # orders judged per verdict it was fitted on (0: any)

    @property
    def version(self) -> str:
        """Names the calibration: the model it belongs to (shortened to fit the ledger's 200 characters;
        the digest covers the full names) and a digest of its parameters."""
        blob = json.dumps(
            [
                self.backend,
                self.model_id,
                self.model_revision,
                self.method,
                self.signal,
                self.orders,
                self.slope,
                self.quality_slope,
                self.intercept,
                self.quality_mean,
                self.pairs,
            ]
        )
        model = self.model_id.rstrip("/").rsplit("/", 2)[-2:]
        short = "/".join(model)[-80:]
        return (
            f"{self.backend[:32]}:{short}@{self.model_revision[:40]}:{self.signal}:"
            f"{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
        )

    def applies_to(
        self,
        backend: str,
        model_id: str,
        model_revision: str,
        signal: str | None = None,
        orders: int | None = None,
    ) -> bool:
        """Only to verdicts of exactly this backend, model and revision, and (where it was fitted on one
        kind) of the same raw signal and number of orders: a map fitted on Bradley-Terry probabilities
        says nothing about score margins."""
        if (self.backend, self.model_id, self.model_revision) != (backend, model_id, model_revision):
            return False
        if signal is not None and self.signal != "any" and signal != self.signal:
            return False
        return orders is None or self.orders == 0 or orders == self.orders

    def apply(self, p_raw: float, quality: float | None) -> float:
        x = _features(p_raw, quality, self.quality_mean)
        z = self.slope * x[0] + self.quality_slope * x[1] + self.intercept
        return round(_sigmoid(z), 6)


def _sigmoid(z: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * z))


def _logit(p: float) -> float:
    p = min(1.0 - 1e-6, max(1e-6, p))
    return max(-LOGIT_CLIP, min(LOGIT_CLIP, math.log(p / (1.0 - p))))


def _features(p_raw: float, quality: float | None, quality_mean: float | None) -> tuple[float, float]:
    q = 0.0 if quality is None or quality_mean is None else quality - quality_mean
    return _logit(p_raw), q


def fit(
    samples: Sequence[Sample],
    *,
    backend: str,
    model_id: str,
    model_revision: str,
    source: str = "leave-one-out",
    signal: str = "any",
    orders: int = 0,
) -> Calibration:
    """Fit the map on held-out pairs by L2-regularised logistic regression (Newton steps)."""
    if len(samples) < MIN_PAIRS:
        raise ValueError(
            f"{len(samples)} held-out pairs for {backend} {model_id}@{model_revision}: a calibration needs "
            f"at least {MIN_PAIRS} (build more users' contexts with context quality on, or label more pairs)"
        )
    right = sum(s.correct for s in samples)
    if right in (0, len(samples)):  # separable: the map would say 1.0 (or 0.0) whatever the input
        raise ValueError(
            f"all {len(samples)} held-out pairs for {backend} {model_id}@{model_revision} were judged "
            f"{'right' if right else 'wrong'}: nothing to calibrate against (add pairs the judge gets wrong, "
            "e.g. more users or a labelled test set)"
        )
    qualities = [s.quality for s in samples if s.quality is not None]
    q_mean = float(np.mean(qualities)) if qualities else None
    X = np.array([[*_features(s.p_raw, s.quality, q_mean), 1.0] for s in samples])
    y = np.array([1.0 if s.correct else 0.0 for s in samples])
    w = np.zeros(3)
    penalty = np.diag([L2, L2, L2])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (y - p) - penalty @ w
        hess = (X * (p * (1.0 - p))[:, None]).T @ X + penalty + 1e-9 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-9:
            break
    return Calibration(
        backend=backend,
        model_id=model_id,
        model_revision=model_revision,
        slope=round(float(w[0]), 6),
        quality_slope=round(float(w[1]), 6),
        intercept=round(float(w[2]), 6),
        quality_mean=None if q_mean is None else round(q_mean, 6),
        pairs=len(samples),
        source=source,
        signal=signal,
        orders=orders,
    )


# ------------------------------------------------------------------------------------------ measures


class Bin(BaseModel):
    lower: float
    upper: float
    count: int
    confidence: float | None  # mean confidence in the bin
    accuracy: float | None  # fraction correct in the bin


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[Bin]:
    """Equal-width bins over [0, 1]: mean confidence and accuracy in each (the reliability diagram)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append(
            Bin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=n,
                confidence=float(conf[mask].mean()) if n else None,
                accuracy=float(hit[mask].mean()) if n else None,
            )
        )
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Sum over bins of (share of verdicts) x |accuracy - mean confidence|."""
    total = len(confidence)
    if total == 0:
        return float("nan")
    return float(
        sum(
            b.count / total * abs((b.accuracy or 0.0) - (b.confidence or 0.0))
            for b in reliability(confidence, correct, bins)
            if b.count
        )
    )


class CoveragePoint(BaseModel):
    threshold: float
    coverage: float  # share of verdicts at or above the threshold
    count: int
    accuracy: float | None


def coverage_curve(
    confidence: Sequence[float],
    correct: Sequence[bool],
    thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
) -> list[CoveragePoint]:
    """Accuracy of the verdicts at or above each confidence threshold, and how many remain."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    out = []
    for t in thresholds:
        mask = conf >= t
        n = int(mask.sum())
        out.append(
            CoveragePoint(
                threshold=t,
                coverage=n / len(conf) if len(conf) else 0.0,
                count=n,
                accuracy=float(hit[mask].mean()) if n else None,
            )
        )
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 points or no spread."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):  # ties share their mean rank
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks
