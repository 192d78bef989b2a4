"""Synthetic sets: images drawn with known attributes (`workers.drawing`), and simulated users with
hidden tastes.

Why: to check that a per-user preference model really learns *each* user's taste we need ground
truth. Here a taste is defined on the DRAWING PARAMETERS (warmth, saturation, ...), never on a
feature extractor, so a model that only sees pixels has to recover it from what the drawing
encodes. Users come in opposite pairs (user 2k+1 = -user 2k), so one pooled, non-personalized
model sits near chance while a per-user model can do well.

Two kinds of references:

- by default (`pigreward demo`), each reference is a random pair whose chosen image follows
  Bradley-Terry on the hidden utility (temperature `NOISE`), so every user is about equally noisy;
- with ``reference_noise=r`` (the accuracy bench's default), references are pairs with a utility gap
  of at least ``reference_gap``, the better image chosen, except in a share of them equal to the user's
  own flip rate (exactly, rounded to whole pairs);
  the rates are spread evenly over [0, r] across users, so contexts differ in how much their
  references can be trusted (what a context's leave-one-out quality and calibrated confidence are
  meant to detect). Each user's rate is in the manifest (`SynthUserData.reference_noise`).

Layout of a generated set::

    out_dir/manifest.json          SyntheticSet (images' params, users, references, tests)
    out_dir/images/img_0000.png    RGB, image_size x image_size
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from workers.drawing import ATTRIBUTES, DrawParams, draw_image

NOISE = 0.35
"""Bradley-Terry temperature of simulated choices: ~85-90% of references agree with the utility."""
MIN_TEST_GAP = 0.5
"""Test pairs need at least this utility gap: a clear preference, like PIGBench's rank-1 vs rank-4."""
REFERENCE_GAP = 0.3
"""With `reference_noise`: reference pairs need at least this utility gap (the better image is known)."""
MAX_REFERENCE_NOISE = 0.5
"""A flip rate above one half makes a user's references say the opposite of their taste."""
PROMPTS: tuple[str, ...] = (
    "Times Square at night",
    "a quiet harbour at dawn",
    "a mountain village in winter",
    "a bowl of fruit on a table",
    "an old library reading room",
    "a desert road at sunset",
    "a child's birthday party",
    "a lighthouse in a storm",
    "a futuristic city skyline",
    "a garden after the rain",
    "a busy fish market",
    "a lone tree in a field",
)
MANIFEST = "manifest.json"
IMAGE_DIR = "images"

_IMAGE_NAME = re.compile(r"img_\d{4,}\.png")


def _check_taste(taste: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(taste) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown taste attributes {unknown}; expected a subset of {list(ATTRIBUTES)}")
    return taste


class SimUser(BaseModel):
    """A simulated user: a hidden linear taste over the drawing attributes and a choice noise."""

    user_id: str
    taste: dict[str, float]
    noise: float = Field(NOISE, gt=0.0)

    @field_validator("taste")
    @classmethod
    def _known_attributes(cls, taste: dict[str, float]) -> dict[str, float]:
        return _check_taste(taste)


class SynthReference(BaseModel):
    """One past choice of a user: `chosen` was preferred over `rejected` (paths relative to the set dir)."""

    prompt: str
    chosen: str
    rejected: str


class SynthTest(BaseModel):
    """A held-out pair with a noise-free label: the image with the higher hidden utility."""

    prompt: str
    image_a: str
    image_b: str
    label: Literal["A", "B"]


class SynthUserData(BaseModel):
    """What the manifest stores per user: the hidden taste (for evaluation only), references, tests,
    and with `reference_noise` the user's flip rate of references (absent from Bradley-Terry sets)."""

    user_id: str
    taste: dict[str, float]
    references: list[SynthReference]
    tests: list[SynthTest]
    reference_noise: float | None = None

    @field_validator("taste")
    @classmethod
    def _known_attributes(cls, taste: dict[str, float]) -> dict[str, float]:
        return _check_taste(taste)


class SyntheticSet(BaseModel):
    """The manifest. `images` maps each image's path relative to the set dir (the same strings the
    references and tests hold, e.g. ``images/img_0000.png``) to the parameters that drew it."""

    seed: int
    image_size: int
    images: dict[str, DrawParams]
    users: list[SynthUserData]


def utility(taste: dict[str, float], params: DrawParams) -> float:
    """Hidden utility of an image for a taste: sum(w * (attr - 0.5)); unknown attributes are an error."""
    _check_taste(taste)
    return float(sum(w * (getattr(params, a) - 0.5) for a, w in taste.items()))


# ------------------------------------------------------------------------------------------- users


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _taste_vector(taste: dict[str, float]) -> np.ndarray:
    _check_taste(taste)
    return np.array([taste.get(a, 0.0) for a in ATTRIBUTES], dtype=np.float64)


def _sample_taste(rng: np.random.Generator) -> dict[str, float]:
    """Sparse: 2-3 strong attributes (|w| in [1.5, 3], random sign), the rest small (|w| <= 0.3)."""
    weights = rng.uniform(-0.3, 0.3, size=len(ATTRIBUTES))
    n_strong = int(rng.integers(2, 4))
    strong = rng.choice(len(ATTRIBUTES), size=n_strong, replace=False)
    weights[strong] = rng.uniform(1.5, 3.0, size=n_strong) * rng.choice([-1.0, 1.0], size=n_strong)
    return {a: float(w) for a, w in zip(ATTRIBUTES, weights, strict=True)}


def _sample_references(
    rng: np.random.Generator, user: SimUser, names: list[str], util: np.ndarray, n_refs: int
) -> tuple[list[SynthReference], set[frozenset[int]]]:
    """Random distinct pairs; the chosen one follows Bradley-Terry on the hidden utility."""
    n = len(names)
    if n_refs > n * (n - 1) // 2:
        raise ValueError(f"{n} images give fewer than {n_refs} distinct pairs; use more images")
    used: set[frozenset[int]] = set()
    refs: list[SynthReference] = []
    while len(refs) < n_refs:
        a, b = (int(i) for i in rng.choice(n, size=2, replace=False))
        prompt = PROMPTS[int(rng.integers(len(PROMPTS)))]
        p_a = _sigmoid((util[a] - util[b]) / user.noise)
        a_chosen = bool(rng.random() < p_a)
        if frozenset((a, b)) in used:
            continue
        used.add(frozenset((a, b)))
        chosen, rejected = (a, b) if a_chosen else (b, a)
        refs.append(SynthReference(prompt=prompt, chosen=names[chosen], rejected=names[rejected]))
    return refs, used


def _sample_gap_references(
    rng: np.random.Generator, names: list[str], util: np.ndarray, n_refs: int, *, gap: float, flip: float
) -> tuple[list[SynthReference], set[frozenset[int]]]:
    """Distinct pairs with a utility gap >= `gap`: the better image chosen, except in exactly
    round(`flip` x n_refs) of them (drawn at random), where the worse one is: the user's flip rate is the
    share of their references that go against their taste, not a coin tossed per pair."""
    n = len(names)
    used: set[frozenset[int]] = set()
    pairs: list[tuple[str, int, int]] = []
    attempts = 0
    max_attempts = 10_000 + 1_000 * n_refs
    while len(pairs) < n_refs:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"found only {len(pairs)} of {n_refs} reference pairs with utility gap >= {gap} among {n} "
                "images; use more images, fewer references or a smaller reference gap"
            )
        a, b = (int(i) for i in rng.choice(n, size=2, replace=False))
        key = frozenset((a, b))
        if key in used or abs(util[a] - util[b]) < gap:
            continue
        used.add(key)
        prompt = PROMPTS[int(rng.integers(len(PROMPTS)))]
        better, worse = (a, b) if util[a] > util[b] else (b, a)
        pairs.append((prompt, better, worse))
    flipped = {int(i) for i in rng.choice(n_refs, size=int(round(flip * n_refs)), replace=False)}
    refs = [
        SynthReference(
            prompt=prompt,
            chosen=names[worse if i in flipped else better],
            rejected=names[better if i in flipped else worse],
        )
        for i, (prompt, better, worse) in enumerate(pairs)
    ]
    return refs, used


def flip_rates(users: int, reference_noise: float, seed: np.random.SeedSequence) -> list[float]:
    """Each user's flip rate: evenly spaced over [0, reference_noise], assigned by a seeded
    permutation in which the two members of an opposite pair (users 2k, 2k+1) never get neighbouring
    rates where that is possible (so a pair's members are not both clean or both noisy)."""
    rates = np.linspace(0.0, reference_noise, users)
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_adjacent = users + 1
    for _ in range(1000):
        perm = rng.permutation(users)
        adjacent = sum(abs(int(perm[k]) - int(perm[k + 1])) == 1 for k in range(0, users - 1, 2))
        if adjacent < best_adjacent:
            best, best_adjacent = perm, adjacent
        if adjacent == 0:
            break
    assert best is not None
    return [round(float(rates[i]), 6) for i in best]


def _sample_test_pairs(
    rng: np.random.Generator, util: np.ndarray, excluded: set[frozenset[int]], n_tests: int
) -> list[tuple[int, int]]:
    """Distinct pairs with a clear utility gap, disjoint from `excluded`; (winner, loser) each."""
    n = len(util)
    pairs: list[tuple[int, int]] = []
    seen = set(excluded)
    attempts = 0
    max_attempts = 10_000 + 1_000 * n_tests
    while len(pairs) < n_tests:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"found only {len(pairs)} of {n_tests} test pairs with utility gap >= {MIN_TEST_GAP} "
                f"among {n} images; use more images or fewer tests"
            )
        a, b = (int(i) for i in rng.choice(n, size=2, replace=False))
        key = frozenset((a, b))
        if key in seen or abs(util[a] - util[b]) < MIN_TEST_GAP:
            continue
        seen.add(key)
        pairs.append((a, b) if util[a] > util[b] else (b, a))
    return pairs


def _make_users(
    rng_seed: np.random.SeedSequence,
    names: list[str],
    attrs: np.ndarray,
    *,
    users: int,
    min_refs: int,
    max_refs: int,
    tests_per_user: int,
    rates: list[float] | None = None,
    reference_gap: float = REFERENCE_GAP,
) -> list[SynthUserData]:
    """Users in opposite pairs sharing their test pairs (same images, opposite labels).

    `rates` (one per user): gap references flipped at each user's rate; None: Bradley-Terry ones."""
    out: list[SynthUserData] = []
    n_pairs = (users + 1) // 2
    for k, pair_seed in enumerate(rng_seed.spawn(n_pairs)):
        rng = np.random.default_rng(pair_seed)
        taste = _sample_taste(rng)
        members = [SimUser(user_id=f"user_{2 * k:02d}", taste=taste)]
        if 2 * k + 1 < users:
            opposite = {a: -w for a, w in taste.items()}
            members.append(SimUser(user_id=f"user_{2 * k + 1:02d}", taste=opposite))

        util0 = (attrs - 0.5) @ _taste_vector(taste)
        refs: list[list[SynthReference]] = []
        excluded: set[frozenset[int]] = set()
        for j, member in enumerate(members):
            util = (attrs - 0.5) @ _taste_vector(member.taste)
            n_refs = int(rng.integers(min_refs, max_refs + 1))
            if rates is None:
                member_refs, used = _sample_references(rng, member, names, util, n_refs)
            else:
                member_refs, used = _sample_gap_references(
                    rng, names, util, n_refs, gap=reference_gap, flip=rates[2 * k + j]
                )
            refs.append(member_refs)
            excluded |= used

        pairs = _sample_test_pairs(rng, util0, excluded, tests_per_user)
        # Exactly balanced labels (odd count: the extra one is random), in random order.
        n_a = tests_per_user // 2 + (int(rng.integers(2)) if tests_per_user % 2 else 0)
        winner_is_a = rng.permutation(np.arange(tests_per_user) < n_a)
        prompts = [PROMPTS[int(i)] for i in rng.integers(len(PROMPTS), size=tests_per_user)]
        for j, member in enumerate(members):
            tests = []
            for (win, lose), win_a, prompt in zip(pairs, winner_is_a, prompts, strict=True):
                a, b = (win, lose) if win_a else (lose, win)
                label: Literal["A", "B"] = "A" if bool(win_a) == (j == 0) else "B"
                tests.append(SynthTest(prompt=prompt, image_a=names[a], image_b=names[b], label=label))
            out.append(
                SynthUserData(
                    user_id=member.user_id,
                    taste=member.taste,
                    references=refs[j],
                    tests=tests,
                    reference_noise=None if rates is None else rates[2 * k + j],
                )
            )
    return out


# ------------------------------------------------------------------------------------ generate/load


def _check_args(
    users: int,
    images: int,
    min_refs: int,
    max_refs: int,
    tests_per_user: int,
    seed: int,
    image_size: int,
    reference_noise: float | None = None,
    reference_gap: float = REFERENCE_GAP,
) -> None:
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    if images < 2:
        raise ValueError(f"images must be >= 2, got {images}")
    if not 0 <= min_refs <= max_refs:
        raise ValueError(f"need 0 <= min_refs <= max_refs, got {min_refs}, {max_refs}")
    if tests_per_user < 0:
        raise ValueError(f"tests_per_user must be >= 0, got {tests_per_user}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if reference_noise is not None and not 0.0 <= reference_noise <= MAX_REFERENCE_NOISE:
        raise ValueError(
            f"reference_noise must be in [0, {MAX_REFERENCE_NOISE}] (a flip rate), got {reference_noise}"
        )
    if reference_gap < 0.0:
        raise ValueError(f"reference_gap must be >= 0, got {reference_gap}")


def generate(
    out_dir: Path,
    *,
    users: int = 20,
    images: int = 200,
    min_refs: int = 5,
    max_refs: int = 15,
    tests_per_user: int = 10,
    seed: int = 0,
    image_size: int = 256,
    progress: Callable[[int], object] | None = None,
    reference_noise: float | None = None,
    reference_gap: float = REFERENCE_GAP,
) -> SyntheticSet:
    """Draw an image pool and simulate users; write images/ and manifest.json under `out_dir`.

    References follow Bradley-Terry (`NOISE`) by default. With `reference_noise` (a flip rate in
    [0, 0.5]), they are pairs with a utility gap >= `reference_gap`, the better image chosen, except in
    exactly the user's own share of them (rates spread evenly over [0, reference_noise], see `flip_rates`).
    Test pairs never repeat a reference pair of either member of an opposite pair.

    Deterministic for a seed, and idempotent: rerunning rewrites the same bytes and removes stale
    ``images/img_*.png`` left by an earlier, larger run. The image pool does not depend on the user
    settings. `progress(n)` is called with the number of images just written (for a progress bar).
    """
    _check_args(
        users, images, min_refs, max_refs, tests_per_user, seed, image_size, reference_noise, reference_gap
    )
    out_dir = Path(out_dir)
    # spawn(3)'s first two children are spawn(2)'s: the default set is what it always was
    image_seq, user_seq, rate_seq = np.random.SeedSequence(seed).spawn(3)

    rng = np.random.default_rng(image_seq)
    attrs = rng.uniform(0.0, 1.0, size=(images, len(ATTRIBUTES)))
    layout_seeds = rng.integers(0, 2**31, size=images)
    width = max(4, len(str(images - 1)))
    names = [f"{IMAGE_DIR}/img_{i:0{width}d}.png" for i in range(images)]
    pool = {
        name: DrawParams(seed=int(s), **dict(zip(ATTRIBUTES, (float(v) for v in row), strict=True)))
        for name, row, s in zip(names, attrs, layout_seeds, strict=True)
    }
    # Users first: impossible settings fail before anything is written.
    user_data = _make_users(
        user_seq,
        names,
        attrs,
        users=users,
        min_refs=min_refs,
        max_refs=max_refs,
        tests_per_user=tests_per_user,
        rates=None if reference_noise is None else flip_rates(users, reference_noise, rate_seq),
        reference_gap=reference_gap,
    )
    result = SyntheticSet(seed=seed, image_size=image_size, images=pool, users=user_data)

    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for name, params in pool.items():
        draw_image(params, image_size).save(out_dir / name, format="PNG")
        if progress is not None:
            progress(1)
    keep = {Path(name).name for name in names}
    for stale in image_dir.iterdir():
        if _IMAGE_NAME.fullmatch(stale.name) and stale.name not in keep:
            stale.unlink()

    manifest = out_dir / MANIFEST
    tmp = manifest.with_name(f".{MANIFEST}.tmp")
    # Bradley-Terry sets keep the manifest they always had (no per-user `reference_noise`: null)
    exclude = {"users": {"__all__": {"reference_noise"}}} if reference_noise is None else None
    tmp.write_text(result.model_dump_json(indent=2, exclude=exclude) + "\n", encoding="utf-8")
    os.replace(tmp, manifest)
    return result


def load(out_dir: Path) -> SyntheticSet:
    """Read a set written by generate(); a missing manifest says how to make one."""
    manifest = Path(out_dir) / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"no synthetic set at {manifest}: run pigreward.synthetic.generate({str(out_dir)!r}) first"
        )
    return SyntheticSet.model_validate_json(manifest.read_text(encoding="utf-8"))
