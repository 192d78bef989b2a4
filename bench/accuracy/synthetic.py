"""The synthetic benchmark: the `pigreward demo` set (`pigreward.synthetic`) in the harness's format.

A set with known tastes needs no download, so `pigreward bench accuracy --synthetic N` runs anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.accuracy.format import BenchPair, BenchReference, BenchUser
from bench.accuracy.run import AccuracyReport, run_accuracy
from core.settings import Settings
from pigreward import synthetic
from pigreward.progress import bar


def synthetic_jsonl(
    out_dir: Path | str,
    users: int = 20,
    seed: int = 0,
    *,
    images: int | None = None,
    tests_per_user: int = 10,
    image_size: int = 256,
    progress: bool = False,
) -> Path:
    """Draw the synthetic set (`pigreward.synthetic`) into `out_dir` and write it in the harness format.

    Returns ``out_dir/synthetic-u<users>-s<seed>.jsonl``, whose image paths are relative to `out_dir`
    (``images/img_0000.png``), so `out_dir` must lie under the image root to be run. `images` defaults
    to 10 per user (at least 40): 20 users give the `pigreward demo` set (200 images).
    """
    out_dir = Path(out_dir)
    n_images = images if images is not None else max(40, 10 * users)
    with bar(n_images, "drawing images", progress, unit="image") as pbar:

        def drawn(n: int) -> None:
            pbar.update(n)

        data = synthetic.generate(
            out_dir,
            users=users,
            images=n_images,
            tests_per_user=tests_per_user,
            seed=seed,
            image_size=image_size,
            progress=drawn,
        )
    path = out_dir / f"synthetic-u{users}-s{seed}.jsonl"
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


def synthetic_dir(settings: Settings, users: int, seed: int) -> Path:
    """Where `run_synthetic` draws a set: under the image root, one folder per (users, seed)."""
    return settings.resolved_image_root / "bench" / f"synthetic-u{users}-s{seed}"


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
) -> AccuracyReport:
    """The synthetic benchmark in one call: draw the set under the image root, then `run_accuracy`."""
    path = synthetic_jsonl(synthetic_dir(settings, users, seed), users, seed, progress=progress)
    return run_accuracy(
        settings, path, out_dir, backends, baselines, progress, seed=seed, chunk_size=chunk_size
    )
