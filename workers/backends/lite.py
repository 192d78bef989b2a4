"""`lite`: a CPU judge with no weights to download.

Dimensions are interpretable image statistics (`workers.features`). A per-user Bradley-Terry model,
P(x+ preferred over x-) = sigmoid(w . (z(x+) - z(x-))), is fitted on the user's reference pairs by
L2-regularised Newton steps; z standardises features by the user's own reference images. The
context's rationales explain each reference choice with the fitted weights; a judgment scores each
image on the user's strongest dimensions (5 + w_k z_k), and the larger total wins.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.enums import Outcome, Winner
from core.errors import NoReferences
from workers.features import FEATURE_KEYS, FEATURES, extract
from workers.generation import ModelIdentity
from workers.imaging import NormalizedImage
from workers.schemas import ContextData, Dimension, JudgeResult, ReferenceExample

L2 = 1.0
MIN_SCALE = 0.02
TIE_EPS = 1e-6


def fit_weights(diffs: np.ndarray, l2: float = L2, steps: int = 25) -> np.ndarray:
    """MAP weights of a Bradley-Terry model on (chosen - rejected) standardized feature differences."""
    w = np.zeros(diffs.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(diffs @ w)))
        grad = diffs.T @ (1.0 - p) - l2 * w
        hess = (diffs * (p * (1.0 - p))[:, None]).T @ diffs + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    return w


def leading_dimension(dims: Sequence[int], toward_1: Sequence[float], winner: Winner) -> int:
    """The dimension the reason names: the one that most favours the winner (`toward_1[k]`: how much
    dimension `dims[k]` favours Image 1). The largest contribution in absolute terms may favour the
    loser, and naming it would contradict the verdict; for a tie, the largest either way."""
    sign = {Winner.A: 1.0, Winner.B: -1.0}.get(winner)
    if sign is None:
        k = max(range(len(dims)), key=lambda j: abs(toward_1[j]))
    else:
        k = max(range(len(dims)), key=lambda j: sign * toward_1[j])
    return dims[k]


def cited_features(diff: np.ndarray, weights: np.ndarray) -> list[int]:
    """The features a reference's rationale names: up to three that most favour the chosen image
    under the user's weights (`diff`: chosen - rejected, standardized). None: the choice goes against
    the user's usual pattern."""
    contrib = weights * diff
    return [int(i) for i in np.argsort(-contrib)[:3] if contrib[i] > 0.05]


class LiteBackend:
    """The embedded default and the baseline the LVLM backends must beat."""

    name = "lite"
    model_id = "lite-bradley-terry"
    model_revision = "1"
    template_version = "lite-v1"
    context_version = "lite-v1"

    @property
    def decoding(self) -> dict[str, Any]:
        """No model, no decoding: nothing to record."""
        return {}

    @property
    def context_identity(self) -> ModelIdentity:
        return ModelIdentity(self.model_id, self.model_revision)

    def __init__(self, max_dimensions: int = 5, min_dimensions: int = 3, cache_size: int = 4096) -> None:
        self.max_dimensions = max_dimensions
        self.min_dimensions = min_dimensions
        self._features: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def features(self, image: NormalizedImage) -> np.ndarray:
        with self._lock:
            hit = self._features.get(image.sha256)
        if hit is not None:
            return hit
        vec = extract(image.image)
        with self._lock:
            self._features[image.sha256] = vec
            while len(self._features) > self._cache_size:
                self._features.popitem(last=False)
        return vec

    def build_context(self, references: Sequence[ReferenceExample]) -> ContextData:
        if not references:
            raise NoReferences("cannot build a context from zero reference pairs")
        chosen = np.stack([self.features(r.chosen) for r in references])
        rejected = np.stack([self.features(r.rejected) for r in references])
        pool = np.concatenate([chosen, rejected])
        mean = pool.mean(axis=0)
        scale = np.maximum(pool.std(axis=0), MIN_SCALE)
        diffs = (chosen - rejected) / scale
        weights = fit_weights(diffs)
        raw_diff = chosen - rejected
        informative = np.abs(raw_diff) > 0.02
        agree = (raw_diff > 0.02).sum(axis=0)
        disagree = (raw_diff < -0.02).sum(axis=0)
        rationales = [
            self._explain_reference(ref, diff, weights, c, r)
            for ref, diff, c, r in zip(references, diffs, chosen, rejected, strict=True)
        ]
        payload: dict[str, Any] = {
            "features": list(FEATURE_KEYS),
            "weights": weights.round(6).tolist(),
            "mean": mean.round(6).tolist(),
            "scale": scale.round(6).tolist(),
            "evidence": {
                k: {
                    "higher": int(agree[i]),
                    "lower": int(disagree[i]),
                    "informative": int(informative[:, i].sum()),
                }
                for i, k in enumerate(FEATURE_KEYS)
            },
            "references": len(references),
        }
        return ContextData(rationales=rationales, payload=payload)

    def _explain_reference(
        self,
        ref: ReferenceExample,
        diff: np.ndarray,
        weights: np.ndarray,
        chosen: np.ndarray,
        rejected: np.ndarray,
    ) -> str:
        reasons = [
            f"{FEATURES[i].more if diff[i] > 0 else FEATURES[i].less} ({chosen[i]:.2f} vs {rejected[i]:.2f})"
            for i in cited_features(diff, weights)
        ]
        if not reasons:
            return (
                f"For '{ref.prompt}' the user's choice goes against their usual pattern: "
                "no feature they favour separates the chosen image."
            )
        return f"For '{ref.prompt}' the user chose the image that is " + ", ".join(reasons) + "."

    def judge(
        self, context: ContextData, prompt: str, image_1: NormalizedImage, image_2: NormalizedImage
    ) -> JudgeResult:
        started = time.perf_counter()
        p = context.payload
        weights = np.asarray(p["weights"])
        mean, scale = np.asarray(p["mean"]), np.asarray(p["scale"])
        f1, f2 = self.features(image_1), self.features(image_2)
        z1, z2 = (f1 - mean) / scale, (f2 - mean) / scale
        dims = self._dimensions(weights)
        dimensions = []
        for i in dims:
            feat = FEATURES[i]
            s1, s2 = round(5.0 + weights[i] * z1[i], 2), round(5.0 + weights[i] * z2[i], 2)
            dimensions.append(
                Dimension(
                    name=feat.title,
                    score_a=s1,
                    score_b=s2,
                    reason=self._dimension_reason(i, f1[i], f2[i], weights[i], p["evidence"][feat.key]),
                )
            )
        total_1 = round(sum(d.score_a for d in dimensions), 2)
        total_2 = round(sum(d.score_b for d in dimensions), 2)
        if abs(total_1 - total_2) <= TIE_EPS:
            winner = Winner.tie
        else:
            winner = Winner.A if total_1 > total_2 else Winner.B
        lines = [f"{d.name}: {d.reason} (Score 1: {d.score_a}, Score 2: {d.score_b})" for d in dimensions]
        verdict = (
            "Both images are equally good"
            if winner == "tie"
            else f"Image {1 if winner == 'A' else 2} is better"
        )
        raw = "\n".join([*lines, f"Score 1: {total_1}", f"Score 2: {total_2}", verdict])
        toward_1 = [float(weights[i] * (z1[i] - z2[i])) for i in dims]
        best = leading_dimension(dims, toward_1, winner)
        rationale = (
            f"{verdict} for this user, chiefly on {FEATURES[best].title.lower()}: "
            f"{self._dimension_reason(best, f1[best], f2[best], weights[best], p['evidence'][FEATURES[best].key])}"
        )
        return JudgeResult(
            outcome=Outcome.valid,
            winner=winner,
            dimensions=dimensions,
            total_a=total_1,
            total_b=total_2,
            rationale=rationale,
            raw_text=raw,
            timings={"backend_s": time.perf_counter() - started},
            # the Bradley-Terry probability of Image 1 on the dimensions judged (what decided the winner)
            p_image_1=float(1.0 / (1.0 + np.exp(-sum(toward_1)))),
            p_source="bradley-terry",
        )

    def _dimensions(self, weights: np.ndarray) -> list[int]:
        """The user's strongest dimensions: 3 to 5, those within a quarter of the strongest weight."""
        order = list(np.argsort(-np.abs(weights)))
        top = np.abs(weights[order[0]])
        keep = [i for i in order if np.abs(weights[i]) >= 0.25 * top][: self.max_dimensions]
        return keep if len(keep) >= self.min_dimensions else order[: self.min_dimensions]

    @staticmethod
    def _dimension_reason(i: int, v1: float, v2: float, w: float, evidence: dict[str, int]) -> str:
        feat = FEATURES[i]
        if abs(v1 - v2) < 0.01:
            comparison = f"both images are alike ({v1:.2f} vs {v2:.2f})"
        else:
            which = 1 if v1 > v2 else 2
            comparison = f"Image {which} is {feat.more} ({v1:.2f} vs {v2:.2f})"
        liked = feat.more if w > 0 else feat.less
        count = evidence["higher"] if w > 0 else evidence["lower"]
        return (
            f"{comparison}; this user chose the {liked} image in {count} of {evidence['informative']} "
            f"references where it differed (weight {w:+.2f})"
        )

    def close(self) -> None:
        with self._lock:
            self._features.clear()
