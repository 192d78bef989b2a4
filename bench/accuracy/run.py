"""One accuracy run end to end: load, judge on the queue, add the baselines, measure, write the report."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.accuracy.baselines import (
    BASELINES,
    image_features,
    non_personalized_outcomes,
    random_outcomes,
    similarity_outcomes,
)
from bench.accuracy.format import Benchmark, BenchmarkError, load_benchmark
from bench.accuracy.metrics import (
    BOOTSTRAP_DRAWS,
    Gain,
    MethodResult,
    Outcome,
    bootstrap_draws,
    paired_gain,
    summarize,
)
from bench.accuracy.queue import (
    BackendRun,
    LedgerCounts,
    default_tenant,
    judge_on_queue,
    plan_run,
    read_outcomes,
    register_users,
)
from bench.accuracy.report import write_reports
from bench.accuracy.specs import BackendSpec, parse_backend
from bench.accuracy.trust import CalibrationResult, calibration_results, save_calibrations
from core.settings import Settings
from models.db import upgrade
from workers.pipeline import Resources


@dataclass
class AccuracyReport:
    """Everything one run measured; `bench.accuracy.report` renders it, `to_dict` is results.json."""

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
    calibration: list[CalibrationResult] = field(default_factory=list)  # per judged backend

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
            method: [_outcome_dict(o) for o in outcomes] for method, outcomes in self.outcomes.items()
        }
        return data


def _outcome_dict(o: Outcome) -> dict[str, Any]:
    """One outcome in results.json: `swap`, `judgment_id` and trust signals only where they say something."""
    trust = o.trust
    signals = (
        {
            "confidence": trust.confidence,
            "confidence_raw": trust.confidence_raw,
            "calibration_version": trust.calibration_version,
            "context_quality": trust.context_quality,
        }
        if trust is not None
        else {}
    )
    return (
        {"user": o.user, "label": o.label, "winner": o.winner, "status": o.status}
        | ({"swap": True} if o.swap else {})
        | ({"judgment_id": o.judgment_id} if o.judgment_id is not None else {})
        | {k: v for k, v in signals.items() if v is not None}
    )


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
        calibration=calibration_results(outcomes, kinds, seed=seed),
    )


class _Stages:
    """Seconds spent in each stage of a run, in order (``results.json``'s `stages`)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


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
    save_calibration: bool = False,
) -> AccuracyReport:
    """Judge a benchmark file with each backend through the queue, add the baselines, write the report.

    `settings` must be the process's active settings (`get_settings()`): workers and resources read
    them too. `out_dir` None writes no files. Re-running reuses every judgment already stored for the
    current versions (`bench.accuracy.queue`, "Resuming"). Raises `BenchmarkError` for unusable input.
    `save_calibration`: fit a confidence calibration on all test verdicts of each backend and store it
    (`bench.accuracy.trust.save_calibrations`); workers apply the newest one of their model version.
    """
    from tasks.runtime import get_resources

    stages = _Stages()
    specs = _backend_specs(backends, baselines)
    upgrade(settings.resolved_database_url)
    bench = load_benchmark(input_path, settings.resolved_image_root)
    tenant = tenant or default_tenant(bench.name)
    stages.done("load")

    res = get_resources()
    register_users(bench, tenant, res.db)
    runs = [plan_run(res, bench, tenant, s, settings.embedded_broker) for s in specs]
    stages.done("register")
    batch_id = judge_on_queue(
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
    stages.done("judge")

    outcomes, kinds, versions = _backend_outcomes(runs, bench, res)
    if baselines:
        outcomes |= _baseline_outcomes(bench, res, seed, progress)
        kinds.update(dict.fromkeys(BASELINES, "baseline"))
    stages.done("baselines")

    report = build_report(
        bench,
        outcomes,
        kinds,
        tenant=tenant,
        seed=seed,
        draws=draws,
        ledger={r.spec.label: r.counts for r in runs},
        versions=versions,
        stages=stages.seconds,
        batch_id=batch_id,
    )
    if save_calibration:
        save_calibrations(
            report.calibration,
            outcomes,
            {r.spec.label: r.spec.name for r in runs},
            dataset=bench.name,
            engine=res.db,
        )
        stages.done("calibration")
    report.stages = dict(stages.seconds)
    report.seconds = stages.total()
    if out_dir is not None:
        _write(report, Path(out_dir))
    return report


def _backend_specs(backends: Sequence[str], baselines: bool) -> list[BackendSpec]:
    specs = [parse_backend(b) for b in backends]
    if not specs and not baselines:
        raise BenchmarkError("nothing to measure: no backend and no baselines")
    if len({s.label for s in specs}) != len(specs):
        raise BenchmarkError(f"backends repeated: {list(backends)}")
    return specs


def _backend_outcomes(
    runs: Sequence[BackendRun], bench: Benchmark, res: Resources
) -> tuple[dict[str, list[Outcome]], dict[str, str], dict[str, list[str]]]:
    """Each backend's outcomes read from the ledger, its kind, and the model versions it answered with."""
    outcomes: dict[str, list[Outcome]] = {}
    kinds: dict[str, str] = {}
    versions: dict[str, list[str]] = {}
    for run in runs:
        outcomes[run.spec.label], versions[run.spec.label] = read_outcomes(run, bench, res.db)
        kinds[run.spec.label] = "backend"
    return outcomes, kinds, versions


def _baseline_outcomes(
    bench: Benchmark, res: Resources, seed: int, progress: bool
) -> dict[str, list[Outcome]]:
    features = image_features(bench.uris(), res.loader.load, progress)
    return {
        "similarity": similarity_outcomes(bench, features),
        "non-personalized": non_personalized_outcomes(bench, features),
        "random": random_outcomes(bench, seed),
    }


def _write(report: AccuracyReport, out_dir: Path) -> None:
    """results.json, report.md and report.html under `out_dir`; the report records where."""
    report.out_dir = str(out_dir.resolve())
    report.files = {k: str(v) for k, v in write_reports(report, out_dir).items()}
