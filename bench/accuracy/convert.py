"""`pigreward bench convert`: a ranked-images folder (PIGBench's layout) to the accuracy harness's format.

Input: a folder holding ``rankings.jsonl``, one line per ranked item (other fields are ignored)::

    {"user": "u1", "prompt": "Times Square at night, neon haze",
     "images": ["images/p01_0.png", "images/p01_1.png", "images/p01_2.png", "images/p01_3.png"],
     "ranking": [2, 0, 3, 1],          # indices into "images", best first
     "split": "reference" | "test"}

``images`` are 4 distinct paths relative to the folder; ``ranking`` is a permutation of 0..3.

Output: the JSON Lines of `bench.accuracy.format` (one line per user, users in order of first appearance,
items in file order), image paths written relative to the output file's folder:

- a ``reference`` item gives ONE reference pair: rank 1 chosen, rank 4 rejected. With
  ``middle_pairs=True`` it also gives rank 2 chosen vs rank 3 rejected. Off by default: PIGBench counts
  5-15 reference *items* per user and the paper's context has one rationale per item; the middle two
  images are often close to indifferent for the user, so that pair is a weak, noisy preference, and
  it would double the context every judgment reads.
- a ``test`` item gives one test pair, rank 1 vs rank 4 (the paper's test pair). Which of the two is
  ``image_a`` is drawn per user from a seeded generator so that each user's labels are balanced:
  half A, half B (an odd count gives the extra one at random).

Malformed items are reported with their line numbers (wrong image count, a ranking that is not a
permutation, a missing image file, bad JSON, unknown split), all of them at once, and nothing is written.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.accuracy.format import BenchPair, BenchReference, BenchUser

RANKINGS = "rankings.jsonl"
IMAGES_PER_ITEM = 4
SPLITS = ("reference", "test")
_MAX_ERRORS_SHOWN = 20


class ConversionError(ValueError):
    """The ranked folder cannot be converted; the message names each bad line."""


@dataclass(frozen=True)
class RankedItem:
    line: int
    user: str
    prompt: str
    images: tuple[Path, ...]  # absolute
    ranking: tuple[int, ...]
    split: str

    def ranked(self, rank: int) -> Path:
        """The image at `rank` (1 = best)."""
        return self.images[self.ranking[rank - 1]]


@dataclass
class _User:
    references: list[RankedItem] = field(default_factory=list)
    tests: list[RankedItem] = field(default_factory=list)


def _check(number: int, obj: object, src: Path) -> tuple[RankedItem | None, list[str]]:
    """One parsed line as an item, or every problem of the line (prefixed with its number)."""
    if not isinstance(obj, dict):
        return None, [f"line {number}: expected a JSON object, got {type(obj).__name__}"]
    problems: list[str] = []
    user = _non_empty(obj.get("user"), "user", problems)
    prompt = _non_empty(obj.get("prompt"), "prompt", problems)
    split = obj.get("split")
    if split not in SPLITS:
        problems.append(f"'split' must be one of {list(SPLITS)}, got {split!r}")
    paths = _image_paths(obj.get("images"), src, problems)
    ranking = _ranking(obj.get("ranking"), problems)
    if problems or user is None or prompt is None or ranking is None:
        return None, [f"line {number}: {p}" for p in problems]
    return RankedItem(number, user.strip(), prompt, tuple(paths), tuple(ranking), str(split)), []


def _non_empty(value: object, name: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"'{name}' must be a non-empty string")
        return None
    return value


def _image_paths(images: object, src: Path, problems: list[str]) -> list[Path]:
    """The item's image files, resolved under `src` (empty when the list itself is malformed)."""
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        problems.append("'images' must be a list of paths")
        return []
    if len(images) != IMAGES_PER_ITEM:
        problems.append(f"expected {IMAGES_PER_ITEM} images, got {len(images)}")
        return []
    if len(set(images)) != len(images):
        problems.append(f"images repeat: {images}")
        return []
    paths = []
    for p in images:
        path = (src / p).resolve()
        if not path.is_file():
            problems.append(f"image {p!r} not found ({path})")
        paths.append(path)
    return paths


def _ranking(ranking: object, problems: list[str]) -> list[int] | None:
    """Indices into the images, best first: a permutation of 0..3 (None otherwise)."""
    if not isinstance(ranking, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ranking
    ):
        problems.append("'ranking' must be a list of image indices, best first")
        return None
    if sorted(ranking) != list(range(IMAGES_PER_ITEM)):
        problems.append(f"ranking {ranking} is not a permutation of 0..{IMAGES_PER_ITEM - 1}")
        return None
    return ranking


def read_rankings(src: Path | str) -> list[RankedItem]:
    """Every item of ``src/rankings.jsonl``, checked; `ConversionError` lists all bad lines."""
    src = Path(src)
    path = src / RANKINGS
    if not path.is_file():
        raise ConversionError(f"no {RANKINGS} in {src}: expected one ranked item per line")
    base = src.resolve()
    items: list[RankedItem] = []
    errors: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: not JSON ({exc.msg})")
                continue
            item, problems = _check(number, obj, base)
            errors += problems
            if item is not None:
                items.append(item)
    if errors:
        shown = errors[:_MAX_ERRORS_SHOWN]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise ConversionError(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(shown) + more)
    if not items:
        raise ConversionError(f"{path} holds no ranked items")
    return items


def balanced_a_first(n: int, rng: np.random.Generator) -> list[bool]:
    """For n test pairs, whether the better image goes first (label A): half each, in random order."""
    n_a = n // 2 + (int(rng.integers(2)) if n % 2 else 0)
    return [bool(x) for x in rng.permutation(np.arange(n) < n_a)]


def convert_ranked(
    src: Path | str, out_path: Path | str, *, seed: int = 0, middle_pairs: bool = False
) -> int:
    """Convert ``src/rankings.jsonl`` into the harness JSONL at `out_path`; returns the users written.

    See the module docstring for the pairs made. Deterministic for a seed; the A/B order of a user's
    tests depends only on the seed, the user id and that user's test items.
    """
    items = read_rankings(src)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_base = out_path.parent.resolve()
    users: dict[str, _User] = {}
    for item in items:
        u = users.setdefault(item.user, _User())
        (u.references if item.split == "reference" else u.tests).append(item)

    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, out_base)).as_posix()

    lines = [_user_line(user, u, rel, seed=seed, middle_pairs=middle_pairs) for user, u in users.items()]
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out_path)
    return len(lines)


def _user_line(user: str, items: _User, rel: Callable[[Path], str], *, seed: int, middle_pairs: bool) -> str:
    """One user's line of the harness file (pairs as the module docstring says; `rel` writes paths)."""
    refs = []
    for item in items.references:
        refs.append(
            BenchReference(prompt=item.prompt, chosen=rel(item.ranked(1)), rejected=rel(item.ranked(4)))
        )
        if middle_pairs:
            refs.append(
                BenchReference(prompt=item.prompt, chosen=rel(item.ranked(2)), rejected=rel(item.ranked(3)))
            )
    rng = np.random.default_rng([seed, zlib.crc32(user.encode())])
    tests = []
    for item, a_first in zip(items.tests, balanced_a_first(len(items.tests), rng), strict=True):
        best, worst = rel(item.ranked(1)), rel(item.ranked(IMAGES_PER_ITEM))
        a, b = (best, worst) if a_first else (worst, best)
        tests.append(BenchPair(prompt=item.prompt, image_a=a, image_b=b, label="A" if a_first else "B"))
    return BenchUser(user=user, references=refs, tests=tests).model_dump_json()
