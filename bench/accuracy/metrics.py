"""Metrics: from one method's outcomes per test pair to accuracies, rates and users' bootstrap intervals.

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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.enums import JudgmentStatus

REFERENCE_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 4), (5, 7), (8, 10), (11, 15), (16, None))
"""Buckets of the number of reference pairs (inclusive bounds; None: no upper bound)."""
BOOTSTRAP_DRAWS = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class VerdictTrust:
    """What the ledger says about how sure a backend's verdict is (`bench.accuracy.trust`).

    `confidence` as stored (calibrated when `calibration_version` is set), `confidence_raw` before
    calibration; both None when the verdict states no winner. `context_quality` is the score of the
    user's context the judgment used (`workers.trust.quality_score`), None where it was not computed.
    """

    confidence: float | None = None
    confidence_raw: float | None = None
    calibration_version: str | None = None
    source: str | None = None  # bradley-terry | logprobs | margin
    context_quality: float | None = None
    judge_model: str | None = None
    model_revision: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One test pair judged by one method.

    `status` is the ledger status (baselines use ``done``, or ``rejected`` when they cannot answer);
    `winner` is A, B, tie, inconsistent, or None without a verdict. `trust`: a backend's confidence
    and context quality as read from the ledger (None for baselines and rows never judged).
    """

    user: str
    label: str
    winner: str | None
    status: str = "done"
    swap: bool = False
    judgment_id: int | None = None
    trust: VerdictTrust | None = None

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
    invalid = statuses.get(JudgmentStatus.invalid, 0)
    swapped = [o for o in done if o.swap]
    per_user = _per_user(outcomes, references, users)
    tested = [r for r in per_user if r.tests]
    pooled_ci, mean_ci = _user_intervals(tested, idx)
    return MethodResult(
        method=method,
        kind=kind,
        tests=n,
        correct=correct,
        decisive=decisive,
        ties=sum(o.winner == "tie" for o in done),
        inconsistent=sum(o.winner == "inconsistent" for o in done),
        invalid=invalid,
        errors=n - len(done) - invalid,
        accuracy_with_tie=correct / n if n else None,
        accuracy_without_tie=correct / decisive if decisive else None,
        interval_with_tie=pooled_ci,
        user_mean=float(np.mean([r.correct / r.tests for r in tested])) if tested else None,
        user_mean_interval=mean_ci,
        swap_judgments=len(swapped),
        swap_consistency=(
            sum(o.winner != "inconsistent" for o in swapped) / len(swapped) if swapped else None
        ),
        per_user=per_user,
        by_references=_by_references(tested),
        statuses=dict(sorted(statuses.items())),
    )


def _per_user(
    outcomes: Sequence[Outcome], references: Mapping[str, int], users: Sequence[str]
) -> list[UserAccuracy]:
    """One row per user: `users` in their order (even without tests), then any other user seen."""
    per: dict[str, UserAccuracy] = {u: UserAccuracy(u, references.get(u, 0), 0, 0, 0) for u in users}
    for o in outcomes:
        row = per.setdefault(o.user, UserAccuracy(o.user, references.get(o.user, 0), 0, 0, 0))
        row.tests += 1
        row.correct += o.correct
        row.decisive += o.decisive
    return [per[u] for u in users] + [r for u, r in per.items() if u not in set(users)]


def _user_intervals(
    tested: Sequence[UserAccuracy], idx: np.ndarray
) -> tuple[Interval | None, Interval | None]:
    """Bootstrap intervals of the pooled and the per-user mean accuracy (None without tested users)."""
    if not tested:
        return None, None
    if idx.shape[1] != len(tested):  # not the report's users: draws of their own
        idx = bootstrap_draws(len(tested), draws=idx.shape[0] or BOOTSTRAP_DRAWS)
    c = np.array([r.correct for r in tested], dtype=np.float64)
    t = np.array([r.tests for r in tested], dtype=np.float64)
    return bootstrap_accuracy(c, t, idx)


def _by_references(tested: Sequence[UserAccuracy]) -> list[BucketAccuracy]:
    """Pooled accuracy of the users in each bucket of reference counts, in bucket order."""
    buckets: dict[str, BucketAccuracy] = {}
    for r in tested:
        label = reference_bucket(r.references)
        b = buckets.setdefault(label, BucketAccuracy(label, 0, 0, 0))
        b.users += 1
        b.tests += r.tests
        b.correct += r.correct
    return [buckets[label] for label in bucket_order() if label in buckets]


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
