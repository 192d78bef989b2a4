"""The synthetic benchmark: simulated users with known tastes (`pigreward.synthetic`) in the harness's format.

A set with known tastes needs no download, so `pigreward bench accuracy --synthetic N` runs anywhere.

The bench's set differs from the `pigreward demo` set on purpose: to measure whether confidences and
context quality can be trusted, users must differ in how trustworthy their references are, and each
user needs enough references and tests for per-user figures to mean something. By default:

- reference noise 0.45: references are pairs with a utility gap >= 0.3 whose better image is chosen,
  except in the user's own share of them (the flip rate), the rates spread evenly over [0, 0.45], from
  users whose references all follow their taste to users for whom they barely do;
- 30-40 references per user: a context's leave-one-out accuracy over fewer pairs is mostly noise.
  Spearman(context quality, user accuracy) over 40 users, seeds 0-3: 0.70, 0.69, 0.59, 0.63 with these
  defaults; 0.51, 0.55, 0.63 (seeds 0-2) with noise 0.4; 0.47-0.62 with 20-30 references;
- 100 test pairs per user: a user's accuracy is then known to about +-0.04 (one standard error at
  0.75 is 0.043), enough to rank users against their context quality;
- 10 images per user (at least 40).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.accuracy.format import BenchPair, BenchReference, BenchUser
from bench.accuracy.run import AccuracyReport, run_accuracy
from core.settings import Settings
from pigreward import synthetic
from pigreward.progress import bar

REFERENCE_NOISE = 0.45
"""Default maximum flip rate of references (rates spread evenly over [0, this] across users)."""
MIN_REFS, MAX_REFS = 30, 40
"""Default references per user: enough for a context's leave-one-out accuracy to mean something."""
REFERENCE_GAP = synthetic.REFERENCE_GAP
TESTS_PER_USER = 100
"""Default test pairs per user: per-user accuracy measured to about +-0.04."""
IMAGE_SIZE = 256


def images_for(users: int) -> int:
    """The image pool of a set of `users`: 10 per user, at least 40."""
    return max(40, 10 * users)


def set_name(
    users: int,
    seed: int,
    *,
    reference_noise: float | None = REFERENCE_NOISE,
    min_refs: int = MIN_REFS,
    max_refs: int = MAX_REFS,
    reference_gap: float = REFERENCE_GAP,
    tests_per_user: int = TESTS_PER_USER,
    images: int | None = None,
    image_size: int = IMAGE_SIZE,
) -> str:
    """The set's name (its file stem, hence its tenant): ``synthetic-u<users>-s<seed>`` and every
    setting that changes its references or tests, so two different sets never share a tenant.

    Bradley-Terry references with the `pigreward.synthetic` defaults (5-15 references, 10 tests) keep
    the name they always had.
    """
    name = f"synthetic-u{users}-s{seed}"
    if reference_noise is not None:
        name += f"-noise{reference_noise:g}"
        if reference_gap != REFERENCE_GAP:
            name += f"-gap{reference_gap:g}"
    defaults = (MIN_REFS, MAX_REFS, TESTS_PER_USER) if reference_noise is not None else (5, 15, 10)
    if (min_refs, max_refs) != defaults[:2]:
        name += f"-refs{min_refs}-{max_refs}"
    if tests_per_user != defaults[2]:
        name += f"-tests{tests_per_user}"
    if images is not None and images != images_for(users):
        name += f"-img{images}"
    if image_size != IMAGE_SIZE:
        name += f"-px{image_size}"
    return name


def synthetic_jsonl(
    out_dir: Path | str,
    users: int = 20,
    seed: int = 0,
    *,
    images: int | None = None,
    tests_per_user: int = TESTS_PER_USER,
    min_refs: int = MIN_REFS,
    max_refs: int = MAX_REFS,
    reference_noise: float | None = REFERENCE_NOISE,
    reference_gap: float = REFERENCE_GAP,
    image_size: int = IMAGE_SIZE,
    progress: bool = False,
) -> Path:
    """Draw the synthetic set (`pigreward.synthetic`) into `out_dir` and write it in the harness format.

    Returns ``out_dir/<set_name(...)>.jsonl``, whose image paths are relative to `out_dir`
    (``images/img_0000.png``), so `out_dir` must lie under the image root to be run. `images` defaults
    to 10 per user (at least 40). `reference_noise` None gives Bradley-Terry references (the
    `pigreward demo` set with ``min_refs=5, max_refs=15, tests_per_user=10``).
    """
    out_dir = Path(out_dir)
    n_images = images if images is not None else images_for(users)
    with bar(n_images, "drawing images", progress, unit="image") as pbar:

        def drawn(n: int) -> None:
            pbar.update(n)

        data = synthetic.generate(
            out_dir,
            users=users,
            images=n_images,
            min_refs=min_refs,
            max_refs=max_refs,
            tests_per_user=tests_per_user,
            seed=seed,
            image_size=image_size,
            progress=drawn,
            reference_noise=reference_noise,
            reference_gap=reference_gap,
        )
    name = set_name(
        users,
        seed,
        reference_noise=reference_noise,
        min_refs=min_refs,
        max_refs=max_refs,
        reference_gap=reference_gap,
        tests_per_user=tests_per_user,
        images=images,
        image_size=image_size,
    )
    path = out_dir / f"{name}.jsonl"
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for u in data.users:
            line = BenchUser(
                user=u.user_id,
                references=[BenchReference(**r.model_dump()) for r in u.references],
                tests=[BenchPair(**t.model_dump()) for t in u.tests],
            )
            fh.write(line.model_dump_json() + "\n")
    tmp.replace(path)
    return path


def synthetic_dir(settings: Settings, users: int, seed: int, name: str | None = None) -> Path:
    """Where `run_synthetic` draws a set: under the image root, one folder per set (`set_name`)."""
    return settings.resolved_image_root / "bench" / (name or f"synthetic-u{users}-s{seed}")


def run_synthetic(
    settings: Settings,
    out_dir: Path | str | None,
    *,
    users: int = 20,
    seed: int = 0,
    backends: Sequence[str] = ("lite",),
    baselines: bool = True,
    progress: bool = True,
    chunk_size: int = 50,
    reference_noise: float | None = REFERENCE_NOISE,
    min_refs: int = MIN_REFS,
    max_refs: int = MAX_REFS,
    reference_gap: float = REFERENCE_GAP,
    tests_per_user: int = TESTS_PER_USER,
    images: int | None = None,
    save_calibration: bool = False,
) -> AccuracyReport:
    """The synthetic benchmark in one call: draw the set under the image root, then `run_accuracy`."""
    name = set_name(
        users,
        seed,
        reference_noise=reference_noise,
        min_refs=min_refs,
        max_refs=max_refs,
        reference_gap=reference_gap,
        tests_per_user=tests_per_user,
        images=images,
    )
    path = synthetic_jsonl(
        synthetic_dir(settings, users, seed, name),
        users,
        seed,
        images=images,
        tests_per_user=tests_per_user,
        min_refs=min_refs,
        max_refs=max_refs,
        reference_noise=reference_noise,
        reference_gap=reference_gap,
        progress=progress,
    )
    return run_accuracy(
        settings,
        path,
        out_dir,
        backends,
        baselines,
        progress,
        seed=seed,
        chunk_size=chunk_size,
        save_calibration=save_calibration,
    )
