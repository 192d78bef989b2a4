"""`pigreward bench accuracy`: personalized pairwise accuracy of the judge backends and baselines.

The harness reads a benchmark file, registers its users and reference pairs, judges every held-out
test pair with each configured backend THROUGH THE QUEUE (ledger rows, Celery workers: an in-process
worker on the embedded default, external workers otherwise), computes the baselines in-process, and
writes ``report.md``, ``report.html`` and ``results.json`` (see `bench.report`).

Input format
============

JSON Lines, one line per user (blank lines are skipped; unknown fields are refused)::

    {"user": "u1",
     "references": [{"prompt": "...", "chosen": URI, "rejected": URI}, ...],
     "tests": [{"prompt": "...", "image_a": URI, "image_b": URI, "label": "A" | "B"}, ...]}

- ``user``: the user's id (unique within the file). ``references``: the user's reference pairs, the
  chosen image preferred over the rejected one; they build the user's context. ``tests``: held-out
  pairs; ``label`` names the image the user preferred.
- An image is given as ``s3://bucket/key``, as ``file://path`` (relative to the image root,
  ``PIGREWARD_IMAGE_ROOT``, default ``<data_dir>/images``), or as a plain path relative to the folder of
  the JSONL file (absolute paths work too). Workers only read S3 and files inside the image root, so a
  plain path must resolve inside the image root: it is then sent as ``file://<path below the root>``.
  Otherwise the harness refuses with an error that says to move the benchmark folder under the image
  root or to set ``PIGREWARD_IMAGE_ROOT`` to a folder that contains it. Plain paths and ``file://``
  URIs must name existing files (checked before anything is submitted); S3 objects are not checked.

How public benchmarks map onto it:

- **PIGBench** (75 users; 100 abstract prompts, each with 4 concrete prompts and 4 SDXL images that
  every user ranked; 5-15 reference items per user): one line per user. Each reference item gives one
  reference pair, rank 1 chosen vs rank 4 rejected; each test item gives one test pair, rank 1 vs rank
  4, A/B order randomised with balanced labels. ``prompt`` is the item's abstract prompt (the four
  images come from its four concrete expansions; the judge compares them against the user's intent).
  `bench.convert.convert_ranked` does exactly this from a ranked-images folder (``rankings.jsonl``).
- **The synthetic set** (`pigreward.synthetic`, the `pigreward demo` data): `synthetic_jsonl` writes it
  in this format (references with hidden-taste choices, tests with noise-free labels).
- **Pick-a-Pic user splits**: group the preference rows by ``user_id``; per user, the rows of the
  reference split (8 per user in the paper's setting) become references (``chosen`` = the preferred
  image, ``rejected`` = the other; drop rows marked as ties), the held-out rows become tests with
  ``image_a``/``image_b`` as stored (``label`` from the ``label_0``/``label_1`` columns; ties dropped).
- **PIP** (5 references per user) and **PASTA** (4 per user): each user's history pairs (preferred vs
  not preferred image of one prompt) become references; each evaluation pair becomes a test with the
  preferred image placed at A or B at random, seeded, so labels are balanced.

Methods
=======

- each backend spec (``lite``, ``sglang``, ``hf``; ``NAME/PROTOCOL`` picks an LVLM protocol,
  ``NAME:swap`` / ``NAME:noswap`` forces judging both orders or one), read from the ledger;
- ``similarity``: a nearest-centroid rule on the user's chosen references. Each image is described by
  the `lite` feature vector (`workers.features`), standardised by the mean and spread of the user's
  own reference images (as `lite` does). With c+ and c- the centroids of the user's chosen and rejected
  images, an image scores s(x) = |z(x) - c-|^2 - |z(x) - c+|^2 (how much closer it is to what the user
  chose than to what they rejected; equivalently 2 z(x).(c+ - c-) + const, a linear rule along the
  centroid difference). The image with the higher score wins; equal scores are a tie.
- ``non-personalized``: one global `lite` model fitted on every user's references pooled, the same
  model code as the backend (as in `pigreward demo`);
- ``random``: a seeded fair coin per test pair (per-user streams, so adding users changes nothing else).

Metrics
=======

- accuracy with tie (the paper's headline): correct / all test pairs; ties, disagreeing orders
  (``inconsistent``), invalid model output and judgments that could not run (rejected, failed) all
  count as wrong;
- accuracy without tie: correct / decisive pairs (winner A or B); ties, inconsistent, invalid and
  errors are excluded;
- invalid rate (status ``invalid``: the model answered outside the protocol), error rate (rejected,
  failed, cancelled), tie rate, inconsistent rate;
- swap consistency: among judgments run in both orders with a verdict, the share whose two orders
  agreed (winner not ``inconsistent``); n/a when nothing was judged in both orders;
- per user: accuracy (with tie) of each user; a percentile bootstrap 95% interval that resamples
  USERS (1000 draws, seeded; the same draws for every method, so differences are paired) for both the
  pooled accuracy and the mean of per-user accuracies; the gain of each backend over each baseline
  with its paired interval;
- by number of references: pooled accuracy of the users whose reference count falls in each bucket
  (0-4, 5-7, 8-10, 11-15, 16+).

Running
=======

Per backend: users and references are registered (idempotent), each user's context is bootstrapped
(queue ``context``), then the pairs still to judge go through `tasks.submit_judgments` in chunks
(queue ``bulk``) under one batch per run, and the harness waits on the ledger with a progress bar.
On the embedded default (``memory://`` broker) an in-process worker runs them; otherwise external
workers must consume ``context`` and ``bulk`` (``pigreward worker``). Baselines run in this process
on the same image store, read and normalized as workers do.

Resuming
========

Every judgment is a ledger row with a natural key (tenant, user, prompt, images, backend, options),
so a second run finds the rows of the first. Rows already finished (``done``/``invalid``) for the
current judge model, template and user context are reused without sending anything; finished rows
whose model, template or context (the user's references) changed are archived and judged again, as
`pigreward rescore` would; rejected, failed, cancelled and unfinished rows are sent again. On the
embedded default, rows left ``running`` by a killed earlier run are released first (only this
process's in-process worker could hold them). Each file gets its own tenant (``bench-<file stem>`` by
default), and a user whose stored references differ from the file is refused rather than mixed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import col, select

from core.enums import JudgmentStatus
from core.errors import PigrewardError
from core.settings import Settings
from models.batches import create_batch
from models.db import session_scope, upgrade
from models.judgments import JudgmentSpec
from models.references import add_reference, list_references
from models.rescoring import archive_and_requeue
from models.tables import Judgment, UserContext
from models.tenants import ensure_tenant
from models.users import ensure_user
from pigreward import synthetic
from pigreward.progress import bar, wait_for_judgments
from workers.backends.lite import MIN_SCALE, LiteBackend
from workers.features import extract
from workers.imaging import NormalizedImage
from workers.pipeline import references_hash
from workers.schemas import ReferenceExample

log = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("similarity", "non-personalized", "random")
REFERENCE_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 4), (5, 7), (8, 10), (11, 15), (16, None))
"""Buckets of the number of reference pairs (inclusive bounds; None: no upper bound)."""
BOOTSTRAP_DRAWS = 1000
LEVEL = 0.95
SIMILARITY_TIE_EPS = 1e-9
_FINISHED = (JudgmentStatus.done, JudgmentStatus.invalid)
_MAX_ERRORS_SHOWN = 20


class BenchmarkError(ValueError):
    """A benchmark file (or its images, or its users in the database) cannot be used; says why and where."""


# -------------------------------------------------------------------------------------- the format


class BenchReference(BaseModel):
    """One reference pair of a user: `chosen` was preferred over `rejected`."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


class BenchPair(BaseModel):
    """One held-out test pair; `label` names the image the user preferred."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    image_a: str = Field(min_length=1)
    image_b: str = Field(min_length=1)
    label: Literal["A", "B"]


class BenchUser(BaseModel):
    """One line of the benchmark file."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=200)
    references: list[BenchReference] = Field(default_factory=list)
    tests: list[BenchPair] = Field(default_factory=list)


@dataclass
class Benchmark:
    """A loaded benchmark: users with image locations already turned into worker URIs."""

    name: str
    path: Path
    users: list[BenchUser]

    @property
    def tests(self) -> int:
        return sum(len(u.tests) for u in self.users)

    @property
    def references(self) -> int:
        return sum(len(u.references) for u in self.users)

    def uris(self) -> list[str]:
        """Every distinct image URI, in first-use order."""
        seen: dict[str, None] = {}
        for u in self.users:
            for r in u.references:
                seen.setdefault(r.chosen)
                seen.setdefault(r.rejected)
            for t in u.tests:
                seen.setdefault(t.image_a)
                seen.setdefault(t.image_b)
        return list(seen)


class _UriResolver:
    """Maps the file's image locations to URIs the workers read (see the module docstring)."""

    def __init__(self, base: Path, image_root: Path) -> None:
        self.base = base
        self.root = image_root.resolve()
        self._done: dict[str, str] = {}

    def __call__(self, location: str) -> str:
        if location not in self._done:
            self._done[location] = self._resolve(location)
        return self._done[location]

    def _resolve(self, location: str) -> str:
        if location.startswith("s3://"):
            return location
        if location.startswith("file://"):
            rel = location[len("file://") :]
            path = (self.root / rel).resolve()
            if not path.is_relative_to(self.root):
                raise BenchmarkError(f"{location!r} resolves outside the image root {str(self.root)!r}")
            if not path.is_file():
                raise BenchmarkError(f"{location!r}: no such file under the image root {str(self.root)!r}")
            return location
        if "://" in location:
            scheme = location.split("://", 1)[0]
            raise BenchmarkError(
                f"{location!r}: unsupported scheme {scheme!r} (use s3://, file:// or a relative path)"
            )
        path = (self.base / location).resolve()
        if not path.is_file():
            raise BenchmarkError(f"{location!r}: no such file ({path})")
        if not path.is_relative_to(self.root):
            raise BenchmarkError(
                f"{location!r} is {path}, outside the image root {self.root}: workers only read files "
                "inside the image root. Put the benchmark folder under it, or set PIGREWARD_IMAGE_ROOT "
                f"to a folder that contains {self.base}"
            )
        return f"file://{path.relative_to(self.root).as_posix()}"


def load_benchmark(path: Path | str, image_root: Path) -> Benchmark:
    """Read and check a benchmark file; image locations become worker URIs.

    Every problem is reported with its line number (up to 20 in one `BenchmarkError`).
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"no benchmark file at {path}")
    resolve = _UriResolver(path.resolve().parent, image_root)
    users: list[BenchUser] = []
    first_line: dict[str, int] = {}
    errors: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                line = BenchUser.model_validate_json(text)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors()
                )
                errors.append(f"{path}:{number}: {problems}")
                continue
            if line.user in first_line:
                errors.append(
                    f"{path}:{number}: user {line.user!r} already given on line {first_line[line.user]}"
                )
                continue
            first_line[line.user] = number
            try:
                users.append(_resolved(line, resolve))
            except BenchmarkError as exc:
                errors.append(f"{path}:{number}: user {line.user!r}: {exc}")
    if errors:
        shown = errors[:_MAX_ERRORS_SHOWN]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise BenchmarkError(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(shown) + more)
    if not users:
        raise BenchmarkError(f"{path} holds no users")
    return Benchmark(name=path.stem, path=path.resolve(), users=users)


def _resolved(line: BenchUser, resolve: _UriResolver) -> BenchUser:
    refs = [
        r.model_copy(update={"chosen": resolve(r.chosen), "rejected": resolve(r.rejected)})
        for r in line.references
    ]
    tests = [
        t.model_copy(update={"image_a": resolve(t.image_a), "image_b": resolve(t.image_b)})
        for t in line.tests
    ]
    return line.model_copy(update={"references": refs, "tests": tests})


def default_tenant(name: str) -> str:
    """The tenant a benchmark's users live in: ``bench-<file stem>`` (slugged, at most 100 characters)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "set"
    return f"bench-{slug}"[:100]


# ------------------------------------------------------------------------------------ backend specs


@dataclass(frozen=True)
class BackendSpec:
    """A judge configuration of the benchmark: ``NAME[/PROTOCOL][:swap|:noswap]``."""

    label: str
    name: str
    protocol: str | None = None
    swap: bool | None = None  # None: the settings' default (both orders on LVLM backends)

    @property
    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"backend": self.name}
        if self.protocol:
            opts["protocol"] = self.protocol
        if self.swap is not None:
            opts["swap"] = self.swap
        return opts


def parse_backend(text: str) -> BackendSpec:
    """``lite``, ``lite:swap``, ``sglang/json-v1``, ``hf:noswap`` ..."""
    from workers.backends import available_backends

    body, _, mode = text.strip().partition(":")
    name, _, protocol = body.partition("/")
    if name not in available_backends():
        raise BenchmarkError(
            f"unknown backend {name!r} in {text!r}; available: {', '.join(available_backends())}"
        )
    if mode not in ("", "swap", "noswap"):
        raise BenchmarkError(f"{text!r}: the part after ':' must be 'swap' or 'noswap'")
    if name in BASELINES:
        raise BenchmarkError(f"{name!r} is a baseline name")
    swap = None if not mode else mode == "swap"
    return BackendSpec(label=text.strip(), name=name, protocol=protocol or None, swap=swap)


# ------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Outcome:
    """One test pair judged by one method.

    `status` is the ledger status (baselines use ``done``, or ``rejected`` when they cannot answer);
    `winner` is A, B, tie, inconsistent, or None without a verdict.
    """

    user: str
    label: str
    winner: str | None
    status: str = "done"
    swap: bool = False
    judgment_id: int | None = None

    @property
    def correct(self) -> bool:
        return self.status == JudgmentStatus.done and self.winner == self.label

    @property
    def decisive(self) -> bool:
        return self.status == JudgmentStatus.done and self.winner in ("A", "B")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low - 1e-12 <= value <= self.high + 1e-12


@dataclass
class UserAccuracy:
    user: str
    references: int
    tests: int
    correct: int
    decisive: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.tests if self.tests else None


@dataclass
class BucketAccuracy:
    bucket: str
    users: int
    tests: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.tests if self.tests else None


@dataclass
class Gain:
    """Pooled accuracy (with tie) of `method` minus `baseline`, with a paired users' bootstrap interval."""

    method: str
    baseline: str
    difference: float
    interval: Interval | None


@dataclass
class MethodResult:
    method: str
    kind: str  # backend | baseline
    tests: int
    correct: int
    decisive: int
    ties: int
    inconsistent: int
    invalid: int
    errors: int
    accuracy_with_tie: float | None
    accuracy_without_tie: float | None
    interval_with_tie: Interval | None  # pooled accuracy, users resampled
    user_mean: float | None  # mean of per-user accuracies
    user_mean_interval: Interval | None
    swap_judgments: int
    swap_consistency: float | None
    per_user: list[UserAccuracy]
    by_references: list[BucketAccuracy]
    statuses: dict[str, int] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)

    @property
    def invalid_rate(self) -> float | None:
        return self.invalid / self.tests if self.tests else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.tests if self.tests else None

    @property
    def tie_rate(self) -> float | None:
        return self.ties / self.tests if self.tests else None

    @property
    def inconsistent_rate(self) -> float | None:
        return self.inconsistent / self.tests if self.tests else None


def reference_bucket(n: int, buckets: Sequence[tuple[int, int | None]] = REFERENCE_BUCKETS) -> str:
    """The label of the bucket holding `n` reference pairs ("5-7", "16+")."""
    for low, high in buckets:
        if n >= low and (high is None or n <= high):
            return f"{low}+" if high is None else f"{low}-{high}"
    raise ValueError(f"{n} reference pairs fall in no bucket of {list(buckets)}")


def bucket_order(buckets: Sequence[tuple[int, int | None]] = REFERENCE_BUCKETS) -> list[str]:
    return [reference_bucket(low, buckets) for low, _ in buckets]


def bootstrap_draws(users: int, *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """Resampled user indices, (draws, users); the same for every method of a report (paired)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, size=(draws, users)) if users else np.zeros((draws, 0), dtype=int)


def _percentiles(values: np.ndarray, level: float = LEVEL) -> Interval:
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(low), float(high))


def bootstrap_accuracy(
    correct: np.ndarray, tests: np.ndarray, idx: np.ndarray, level: float = LEVEL
) -> tuple[Interval, Interval]:
    """Intervals of the pooled accuracy and of the mean per-user accuracy, users resampled by `idx`.

    `correct` and `tests` are per user (every user has tests > 0).
    """
    c, n = correct[idx].sum(axis=1), tests[idx].sum(axis=1)
    pooled = c / n
    mean = (correct / tests)[idx].mean(axis=1)
    return _percentiles(pooled, level), _percentiles(mean, level)


def summarize(
    method: str,
    kind: str,
    outcomes: Sequence[Outcome],
    references: Mapping[str, int],
    idx: np.ndarray,
    users: Sequence[str],
) -> MethodResult:
    """Every metric of one method. `users` fixes the order behind the bootstrap indices `idx`."""
    n = len(outcomes)
    statuses = Counter(o.status for o in outcomes)
    done = [o for o in outcomes if o.status == JudgmentStatus.done]
    correct = sum(o.correct for o in outcomes)
    decisive = sum(o.decisive for o in outcomes)
    ties = sum(o.winner == "tie" for o in done)
    inconsistent = sum(o.winner == "inconsistent" for o in done)
    invalid = statuses.get(JudgmentStatus.invalid, 0)
    errors = n - len(done) - invalid
    swapped = [o for o in done if o.swap]

    per: dict[str, UserAccuracy] = {u: UserAccuracy(u, references.get(u, 0), 0, 0, 0) for u in users}
    for o in outcomes:
        row = per.setdefault(o.user, UserAccuracy(o.user, references.get(o.user, 0), 0, 0, 0))
        row.tests += 1
        row.correct += o.correct
        row.decisive += o.decisive
    per_user = [per[u] for u in users] + [r for u, r in per.items() if u not in set(users)]

    tested = [r for r in per_user if r.tests]
    pooled_ci = mean_ci = None
    user_mean = float(np.mean([r.correct / r.tests for r in tested])) if tested else None
    if tested:
        if idx.shape[1] != len(tested):  # not the report's users: draws of their own
            idx = bootstrap_draws(len(tested), draws=idx.shape[0] or BOOTSTRAP_DRAWS)
        c = np.array([r.correct for r in tested], dtype=np.float64)
        t = np.array([r.tests for r in tested], dtype=np.float64)
        pooled_ci, mean_ci = bootstrap_accuracy(c, t, idx)

    buckets: dict[str, BucketAccuracy] = {}
    for r in tested:
        label = reference_bucket(r.references)
        b = buckets.setdefault(label, BucketAccuracy(label, 0, 0, 0))
        b.users += 1
        b.tests += r.tests
        b.correct += r.correct
    by_refs = [buckets[label] for label in bucket_order() if label in buckets]

    return MethodResult(
        method=method,
        kind=kind,
        tests=n,
        correct=correct,
        decisive=decisive,
        ties=ties,
        inconsistent=inconsistent,
        invalid=invalid,
        errors=errors,
        accuracy_with_tie=correct / n if n else None,
        accuracy_without_tie=correct / decisive if decisive else None,
        interval_with_tie=pooled_ci,
        user_mean=user_mean,
        user_mean_interval=mean_ci,
        swap_judgments=len(swapped),
        swap_consistency=(
            sum(o.winner != "inconsistent" for o in swapped) / len(swapped) if swapped else None
        ),
        per_user=per_user,
        by_references=by_refs,
        statuses=dict(sorted(statuses.items())),
    )


def paired_gain(a: MethodResult, b: MethodResult, idx: np.ndarray) -> Gain:
    """a's pooled accuracy minus b's, with the interval over the same resampled users."""
    diff = (a.accuracy_with_tie or 0.0) - (b.accuracy_with_tie or 0.0)
    rows_a = {r.user: r for r in a.per_user}
    rows_b = {r.user: r for r in b.per_user}
    users = [u for u in rows_a if rows_a[u].tests and u in rows_b and rows_b[u].tests == rows_a[u].tests]
    if not users or len(users) != idx.shape[1]:
        return Gain(a.method, b.method, diff, None)
    ca = np.array([rows_a[u].correct for u in users], dtype=np.float64)
    cb = np.array([rows_b[u].correct for u in users], dtype=np.float64)
    t = np.array([rows_a[u].tests for u in users], dtype=np.float64)
    n = t[idx].sum(axis=1)
    return Gain(a.method, b.method, diff, _percentiles((ca[idx].sum(axis=1) - cb[idx].sum(axis=1)) / n))


# ---------------------------------------------------------------------------------------- baselines


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


def similarity_outcomes(bench: Benchmark, features: Mapping[str, np.ndarray | None]) -> list[Outcome]:
    out = []
    for u in bench.users:
        refs = [
            r
            for r in u.references
            if features.get(r.chosen) is not None and features.get(r.rejected) is not None
        ]
        chosen = np.stack([features[r.chosen] for r in refs]) if refs else None  # type: ignore[misc]
        rejected = np.stack([features[r.rejected] for r in refs]) if refs else None  # type: ignore[misc]
        for t in u.tests:
            fa, fb = features.get(t.image_a), features.get(t.image_b)
            if chosen is None or rejected is None or fa is None or fb is None:
                out.append(Outcome(u.user, t.label, None, JudgmentStatus.rejected))
            else:
                out.append(Outcome(u.user, t.label, similarity_winner(chosen, rejected, fa, fb)))
    return out


_PLACEHOLDER = Image.new("RGB", (1, 1))


class _PrecomputedLite(LiteBackend):
    """`lite`'s own model code (fit, dimensions, totals) over features computed once per image."""

    def __init__(self, features: Mapping[str, np.ndarray | None]) -> None:
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


def non_personalized_outcomes(bench: Benchmark, features: Mapping[str, np.ndarray | None]) -> list[Outcome]:
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


def image_features(uris: Sequence[str], load: Any, progress: bool = False) -> dict[str, np.ndarray | None]:
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


# ------------------------------------------------------------------------------ running on the queue


@dataclass
class LedgerCounts:
    """What one backend's run did with the ledger."""

    judgments: int = 0
    reused: int = 0  # finished rows for the current versions: nothing sent
    submitted: int = 0  # new, unfinished, rejected or failed rows: sent
    rejudged: int = 0  # finished for an older model, template or context: archived, sent again
    released: int = 0  # left `running` by a killed embedded run


@dataclass
class _BackendRun:
    spec: BackendSpec
    specs: list[JudgmentSpec]
    pending: list[int]
    ids: dict[int, int]  # position in specs -> judgment id
    counts: LedgerCounts


def register_users(bench: Benchmark, tenant: str, engine: sa.Engine) -> None:
    """Users and reference pairs (idempotent); a user whose stored references differ is refused."""
    with session_scope(engine) as session:
        tenant_id: int = ensure_tenant(session=session, name=tenant).id  # type: ignore[assignment]
        conflicts = []
        for u in bench.users:
            row = ensure_user(session=session, tenant_id=tenant_id, external_id=u.user)
            wanted = dict.fromkeys((r.prompt, r.chosen, r.rejected) for r in u.references)
            stored = _stored(session, row.id)  # type: ignore[arg-type]
            for prompt, chosen, rejected in (key for key in wanted if key not in stored):
                add_reference(
                    session=session,
                    user_id=row.id,  # type: ignore[arg-type]
                    prompt=prompt,
                    chosen_uri=chosen,
                    rejected_uri=rejected,
                )
            extra = stored - set(wanted)
            if extra:
                conflicts.append(f"{u.user!r} ({len(extra)} stored pair(s) not in the file)")
        if conflicts:
            raise BenchmarkError(
                f"users of tenant {tenant!r} already hold reference pairs this file does not list: "
                f"{', '.join(conflicts[:10])}{' ...' if len(conflicts) > 10 else ''}. The harness never "
                "deletes references: run with another tenant, or delete these users first"
            )


def _stored(session: Any, user_id: int) -> set[tuple[str, str, str]]:
    return {
        (r.prompt, r.chosen_uri, r.rejected_uri) for r in list_references(session=session, user_id=user_id)
    }


def _plan(res: Any, bench: Benchmark, tenant: str, spec: BackendSpec, embedded: bool) -> _BackendRun:
    """Find what the ledger already holds for this backend; archive stale verdicts; list what to send."""
    from tasks.submit import judgment_spec
    from workers.rescoring import why_stale

    specs = [
        judgment_spec(u.user, t.prompt, t.image_a, t.image_b, spec.options, tenant)
        for u in bench.users
        for t in u.tests
    ]
    counts = LedgerCounts(judgments=len(specs))
    ids: dict[int, int] = {}
    pending: list[int] = []
    backend = None
    with session_scope(res.db) as session:
        tenant_id: int = ensure_tenant(session=session, name=tenant).id  # type: ignore[assignment]
        keys = [s.key(tenant_id) for s in specs]
        found: dict[str, tuple[Judgment, UserContext | None]] = {}
        distinct = sorted(set(keys))
        for start in range(0, len(distinct), 500):
            stmt = (
                select(Judgment, UserContext)
                .join(UserContext, col(UserContext.id) == col(Judgment.context_id), isouter=True)
                .where(col(Judgment.key).in_(distinct[start : start + 500]))
            )
            for judgment, context in session.exec(stmt):
                found[judgment.key] = (judgment, context)
        refs_hash: dict[int, str] = {}
        decided: dict[str, bool] = {}  # key -> reused
        for i, key in enumerate(keys):
            if key not in found:
                pending.append(i)
                continue
            judgment, context = found[key]
            jid: int = judgment.id  # type: ignore[assignment]
            ids[i] = jid
            if key not in decided:
                reuse = False
                if judgment.status in _FINISHED:
                    if backend is None:
                        backend = _backend(res, spec)
                    uid = judgment.user_id
                    if uid is not None and uid not in refs_hash:
                        rows = list_references(session=session, user_id=uid)
                        refs_hash[uid] = references_hash(
                            [(r.prompt, r.chosen_uri, r.rejected_uri) for r in rows]
                        )
                    reason = why_stale(judgment, context, backend, refs_hash.get(uid or -1))
                    if reason is None:
                        reuse = True
                    elif archive_and_requeue(session=session, judgment_id=jid, reason=reason, run_id=None):
                        counts.rejudged += 1
                elif judgment.status == JudgmentStatus.running and embedded:
                    # only this process's in-process worker could hold it: a killed earlier run's
                    session.execute(
                        sa.update(Judgment)
                        .where(col(Judgment.id) == jid, col(Judgment.status) == JudgmentStatus.running)
                        .values(status=JudgmentStatus.queued, claim_token=None)
                    )
                    counts.released += 1
                decided[key] = reuse
            if decided[key]:
                counts.reused += 1
            else:
                pending.append(i)
    counts.submitted = len(pending) - counts.rejudged
    return _BackendRun(spec, specs, pending, ids, counts)


def _backend(res: Any, spec: BackendSpec) -> Any:
    try:
        backend = res.backend_for(spec.name, spec.protocol)
        backend.context_identity  # noqa: B018 - an LVLM backend asks its server for the model now
    except PigrewardError as exc:
        raise BenchmarkError(f"cannot read the versions of backend {spec.label!r}: {exc.message}") from exc
    return backend


def _judge_on_queue(
    runs: Sequence[_BackendRun],
    bench: Benchmark,
    tenant: str,
    *,
    embedded: bool,
    wait_contexts: bool,
    chunk_size: int,
    progress: bool,
    timeout_s: float,
    engine: sa.Engine,
) -> int | None:
    """Bootstrap contexts, send what is pending, wait on the ledger; returns the batch id (if any).

    Contexts are built ahead (one task per user, as `pigreward demo` does) only when their results
    can be read back (`wait_contexts`); otherwise each user's first judgment builds it.
    """
    from tasks import app, bootstrap_context, submit_judgments
    from tasks.embedded import embedded_worker

    pending = sum(len(r.pending) for r in runs)
    if not pending:
        return None
    with session_scope(engine) as session:
        batch_id: int = create_batch(  # type: ignore[assignment]
            session=session, tenant=tenant, name=f"bench accuracy {bench.name}", kind="bench", total=pending
        ).id
    worker = embedded_worker(app) if embedded else contextlib.nullcontext()
    with worker:
        for run in runs:
            if not run.pending:
                continue
            users = list(dict.fromkeys(run.specs[i].user for i in run.pending)) if wait_contexts else []
            results = [
                bootstrap_context.delay(u, tenant=tenant, backend=run.spec.name, protocol=run.spec.protocol)
                for u in users
            ]
            with bar(
                len(results), f"contexts ({run.spec.label})", progress and bool(results), unit="user"
            ) as pbar:
                for result in results:
                    outcome = result.get(timeout=timeout_s, disable_sync_subtasks=False)
                    if outcome["status"] != "ready":
                        log.warning("context of %s: %s", outcome["user"], outcome.get("error"))
                    pbar.update(1)
            sent = submit_judgments(
                [run.specs[i].model_copy(update={"batch_id": batch_id}) for i in run.pending],
                chunk_size=chunk_size,
            )
            run.ids.update(zip(run.pending, sent, strict=True))
        all_ids = sorted({jid for run in runs for jid in run.ids.values()})
        wait_for_judgments(engine, all_ids, progress=progress, timeout_s=timeout_s)
    return batch_id


def _read_outcomes(run: _BackendRun, bench: Benchmark, engine: sa.Engine) -> tuple[list[Outcome], list[str]]:
    """The stored verdicts of a backend's test pairs, in file order, and the model versions seen."""
    ids = sorted(set(run.ids.values()))
    rows: dict[int, Judgment] = {}
    with session_scope(engine) as session:
        for start in range(0, len(ids), 500):
            for row in session.exec(select(Judgment).where(col(Judgment.id).in_(ids[start : start + 500]))):
                rows[row.id] = row  # type: ignore[index]
    labels = [(u.user, t.label) for u in bench.users for t in u.tests]
    out = []
    versions: Counter[str] = Counter()
    for i, (user, label) in enumerate(labels):
        jid = run.ids.get(i)
        row = rows.get(jid) if jid is not None else None
        if row is None:
            out.append(Outcome(user, label, None, "missing"))
            continue
        winner = row.winner if row.status == JudgmentStatus.done else None
        out.append(Outcome(user, label, winner, str(row.status), bool(row.swap), row.id))
        if row.status in _FINISHED:
            versions[f"{row.judge_model} rev {row.model_revision}, template {row.template_version}"] += 1
    return out, [f"{v} ({n})" for v, n in versions.most_common()]


# ------------------------------------------------------------------------------------------- report


@dataclass
class AccuracyReport:
    """Everything one run measured; `bench.report` renders it, `to_dict` is results.json."""

    dataset: str
    input_path: str
    tenant: str
    users: int
    tests: int
    references: int
    references_min: int
    references_max: int
    methods: list[MethodResult]
    gains: list[Gain]
    ledger: dict[str, LedgerCounts]
    seed: int
    bootstrap_draws: int
    seconds: float
    stages: dict[str, float]
    created_at: str
    batch_id: int | None = None
    out_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.method == name:
                return m
        raise KeyError(f"no method {name!r}; have {[m.method for m in self.methods]}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for m, src in zip(data["methods"], self.methods, strict=True):
            for name in ("invalid_rate", "error_rate", "tie_rate", "inconsistent_rate"):
                m[name] = getattr(src, name)
            for row, user in zip(m["per_user"], src.per_user, strict=True):
                row["accuracy"] = user.accuracy
            for row, bucket in zip(m["by_references"], src.by_references, strict=True):
                row["accuracy"] = bucket.accuracy
        data["outcomes"] = {
            method: [
                {"user": o.user, "label": o.label, "winner": o.winner, "status": o.status}
                | ({"swap": True} if o.swap else {})
                | ({"judgment_id": o.judgment_id} if o.judgment_id is not None else {})
                for o in outcomes
            ]
            for method, outcomes in self.outcomes.items()
        }
        return data


def build_report(
    bench: Benchmark,
    outcomes: Mapping[str, list[Outcome]],
    kinds: Mapping[str, str],
    *,
    tenant: str,
    seed: int = 0,
    draws: int = BOOTSTRAP_DRAWS,
    ledger: Mapping[str, LedgerCounts] | None = None,
    versions: Mapping[str, list[str]] | None = None,
    seconds: float = 0.0,
    stages: Mapping[str, float] | None = None,
    batch_id: int | None = None,
) -> AccuracyReport:
    """Metrics of every method over the same bootstrap draws, and each backend's gain over each baseline."""
    refs = {u.user: len(u.references) for u in bench.users}
    users = [u.user for u in bench.users if u.tests]
    idx = bootstrap_draws(len(users), draws=draws, seed=seed)
    methods = []
    for name, outs in outcomes.items():
        result = summarize(name, kinds[name], outs, refs, idx, users)
        result.versions = list((versions or {}).get(name, []))
        methods.append(result)
    backends = [m for m in methods if m.kind == "backend"]
    baselines = [m for m in methods if m.kind == "baseline"]
    gains = [paired_gain(a, b, idx) for a in backends for b in baselines]
    counts = [len(u.references) for u in bench.users]
    return AccuracyReport(
        dataset=bench.name,
        input_path=str(bench.path),
        tenant=tenant,
        users=len(bench.users),
        tests=bench.tests,
        references=bench.references,
        references_min=min(counts),
        references_max=max(counts),
        methods=methods,
        gains=gains,
        ledger=dict(ledger or {}),
        seed=seed,
        bootstrap_draws=draws,
        seconds=seconds,
        stages=dict(stages or {}),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        batch_id=batch_id,
        outcomes=dict(outcomes),
    )


def run_accuracy(
    settings: Settings,
    input_path: Path | str,
    out_dir: Path | str | None,
    backends: Sequence[str] = ("lite",),
    baselines: bool = True,
    progress: bool = True,
    *,
    tenant: str | None = None,
    seed: int = 0,
    chunk_size: int = 50,
    draws: int = BOOTSTRAP_DRAWS,
    timeout_s: float = 24 * 3600.0,
) -> AccuracyReport:
    """Judge a benchmark file with each backend through the queue, add the baselines, write the report.

    `settings` must be the process's active settings (`get_settings()`): workers and resources read
    them too. `out_dir` None writes no files. Re-running reuses every judgment already stored for the
    current versions (module docstring, "Resuming"). Raises `BenchmarkError` for unusable input.
    """
    from tasks.runtime import get_resources

    started = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = round(now - since, 3)
        return now

    specs = [parse_backend(b) for b in backends]
    if not specs and not baselines:
        raise BenchmarkError("nothing to measure: no backend and no baselines")
    if len({s.label for s in specs}) != len(specs):
        raise BenchmarkError(f"backends repeated: {list(backends)}")
    upgrade(settings.resolved_database_url)
    bench = load_benchmark(input_path, settings.resolved_image_root)
    tenant = tenant or default_tenant(bench.name)
    t = stage("load", started)

    res = get_resources()
    register_users(bench, tenant, res.db)
    runs = [_plan(res, bench, tenant, s, settings.embedded_broker) for s in specs]
    t = stage("register", t)
    batch_id = _judge_on_queue(
        runs,
        bench,
        tenant,
        embedded=settings.embedded_broker,
        # an in-memory result store is only readable from the worker's own process (embedded)
        wait_contexts=settings.embedded_broker or not settings.result_backend.startswith("cache+memory"),
        chunk_size=chunk_size,
        progress=progress,
        timeout_s=timeout_s,
        engine=res.db,
    )
    t = stage("judge", t)

    outcomes: dict[str, list[Outcome]] = {}
    kinds: dict[str, str] = {}
    versions: dict[str, list[str]] = {}
    for run in runs:
        outcomes[run.spec.label], versions[run.spec.label] = _read_outcomes(run, bench, res.db)
        kinds[run.spec.label] = "backend"
    if baselines:
        features = image_features(bench.uris(), res.loader.load, progress)
        outcomes["similarity"] = similarity_outcomes(bench, features)
        outcomes["non-personalized"] = non_personalized_outcomes(bench, features)
        outcomes["random"] = random_outcomes(bench, seed)
        kinds.update(dict.fromkeys(BASELINES, "baseline"))
    stage("baselines", t)

    report = build_report(
        bench,
        outcomes,
        kinds,
        tenant=tenant,
        seed=seed,
        draws=draws,
        ledger={r.spec.label: r.counts for r in runs},
        versions=versions,
        stages=stages,
        batch_id=batch_id,
    )
    report.seconds = round(time.perf_counter() - started, 3)
    if out_dir is not None:
        from bench.report import write_reports

        report.out_dir = str(Path(out_dir).resolve())
        report.files = {k: str(v) for k, v in write_reports(report, Path(out_dir)).items()}
    return report


# ---------------------------------------------------------------------------------------- synthetic


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
        data = synthetic.generate(
            out_dir,
            users=users,
            images=n_images,
            tests_per_user=tests_per_user,
            seed=seed,
            image_size=image_size,
            progress=pbar.update,
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


def render_summary(report: AccuracyReport) -> str:
    """The terminal table (methods x metrics); see `bench.report.render_summary`."""
    from bench.report import render_summary as render

    return render(report)
