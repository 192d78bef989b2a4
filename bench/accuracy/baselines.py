"""Baselines, computed in this process: what a backend's accuracy is compared with.

Images are read and normalized as workers do (`image_features`), on the same image store.

- ``similarity``: a nearest-centroid rule on the user's chosen references. Each image is described by
  the `lite` feature vector (`workers.features`), standardised by the mean and spread of the user's
  own reference images (as `lite` does). With c+ and c- the centroids of the user's chosen and rejected
  images, an image scores s(x) = |z(x) - c-|^2 - |z(x) - c+|^2 (how much closer it is to what the user
  chose than to what they rejected; equivalently 2 z(x).(c+ - c-) + const, a linear rule along the
  centroid difference). The image with the higher score wins; equal scores are a tie.
- ``non-personalized``: one global `lite` model fitted on every user's references pooled, the same
  model code as the backend (as in `pigreward demo`);
- ``random``: a seeded fair coin per test pair (per-user streams, so adding users changes nothing else).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from bench.accuracy.format import Benchmark, BenchUser
from bench.accuracy.metrics import Outcome
from core.enums import JudgmentStatus
from core.errors import PigrewardError
from pigreward.progress import bar
from workers.backends.lite import MIN_SCALE, LiteBackend
from workers.features import extract
from workers.imaging import NormalizedImage
from workers.schemas import ReferenceExample

log = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("similarity", "non-personalized", "random")
SIMILARITY_TIE_EPS = 1e-9

Features = Mapping[str, np.ndarray | None]
"""The `lite` feature vector of each image URI; None for an image that could not be read."""


def random_outcomes(bench: Benchmark, seed: int) -> list[Outcome]:
    """A fair coin per test pair, one seeded stream per user."""
    out = []
    for u in bench.users:
        rng = np.random.default_rng([seed, zlib.crc32(u.user.encode())])
        for t in u.tests:
            out.append(Outcome(u.user, t.label, "A" if rng.random() < 0.5 else "B"))
    return out


def similarity_winner(
    chosen: np.ndarray, rejected: np.ndarray, image_a: np.ndarray, image_b: np.ndarray
) -> str:
    """The nearest-centroid rule (module docstring): A, B or tie.

    `chosen` and `rejected` are (n, features) arrays of the user's reference images.
    """
    pool = np.concatenate([chosen, rejected])
    mean, scale = pool.mean(axis=0), np.maximum(pool.std(axis=0), MIN_SCALE)
    c_plus = ((chosen - mean) / scale).mean(axis=0)
    c_minus = ((rejected - mean) / scale).mean(axis=0)

    def score(f: np.ndarray) -> float:
        z = (f - mean) / scale
        return float(((z - c_minus) ** 2).sum() - ((z - c_plus) ** 2).sum())

    gap = score(image_a) - score(image_b)
    if abs(gap) <= SIMILARITY_TIE_EPS:
        return "tie"
    return "A" if gap > 0 else "B"


def similarity_outcomes(bench: Benchmark, features: Features) -> list[Outcome]:
    """The nearest-centroid rule per test pair; a pair without readable images is ``rejected``."""
    out = []
    for u in bench.users:
        chosen, rejected = _reference_features(u, features)
        for t in u.tests:
            fa, fb = features.get(t.image_a), features.get(t.image_b)
            if chosen is None or rejected is None or fa is None or fb is None:
                out.append(Outcome(u.user, t.label, None, JudgmentStatus.rejected))
            else:
                out.append(Outcome(u.user, t.label, similarity_winner(chosen, rejected, fa, fb)))
    return out


def _reference_features(user: BenchUser, features: Features) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The (n, features) arrays of the user's chosen and rejected images; None without a readable pair."""
    chosen: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    for r in user.references:
        fc, fr = features.get(r.chosen), features.get(r.rejected)
        if fc is not None and fr is not None:
            chosen.append(fc)
            rejected.append(fr)
    if not chosen:
        return None, None
    return np.stack(chosen), np.stack(rejected)


_PLACEHOLDER = Image.new("RGB", (1, 1))


class _PrecomputedLite(LiteBackend):
    """`lite`'s own model code (fit, dimensions, totals) over features computed once per image."""

    def __init__(self, features: Features) -> None:
        super().__init__(cache_size=0)
        self.table = features

    def features(self, image: NormalizedImage) -> np.ndarray:
        vec = self.table[image.uri]
        assert vec is not None
        return vec

    @staticmethod
    def stub(uri: str) -> NormalizedImage:
        """An image known by its URI only: no pixels are kept for the whole benchmark."""
        return NormalizedImage(
            sha256=uri, uri=uri, width=0, height=0, format="", size_bytes=0, image=_PLACEHOLDER
        )


def non_personalized_outcomes(bench: Benchmark, features: Features) -> list[Outcome]:
    """One global `lite` model fitted on every user's references pooled."""
    lite = _PrecomputedLite(features)
    stub = lite.stub
    pooled = [
        ReferenceExample(r.prompt, stub(r.chosen), stub(r.rejected))
        for u in bench.users
        for r in u.references
        if features.get(r.chosen) is not None and features.get(r.rejected) is not None
    ]
    context = lite.build_context(pooled) if pooled else None
    out = []
    for u in bench.users:
        for t in u.tests:
            if context is None or features.get(t.image_a) is None or features.get(t.image_b) is None:
                out.append(Outcome(u.user, t.label, None, JudgmentStatus.rejected))
                continue
            verdict = lite.judge(context, t.prompt, stub(t.image_a), stub(t.image_b))
            out.append(Outcome(u.user, t.label, verdict.winner))
    return out


def image_features(
    uris: Sequence[str], load: Callable[[str], NormalizedImage], progress: bool = False
) -> dict[str, np.ndarray | None]:
    """The `lite` feature vector of each image, read and normalized as workers do (None if unreadable)."""
    out: dict[str, np.ndarray | None] = {}
    with bar(len(uris), "image features", progress, unit="image") as pbar:
        for uri in uris:
            try:
                out[uri] = extract(load(uri).image)
            except PigrewardError as exc:
                log.warning("baselines skip %s: %s", uri, exc.message)
                out[uri] = None
            pbar.update(1)
    return out
