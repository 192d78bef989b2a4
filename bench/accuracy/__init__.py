"""`pigreward bench accuracy`: personalized pairwise accuracy of the judge backends and baselines.

The harness reads a benchmark file, registers its users and reference pairs, judges every held-out
test pair with each configured backend THROUGH THE QUEUE (ledger rows, Celery workers: an in-process
worker on the embedded default, external workers otherwise), computes the baselines in-process, and
writes ``report.md``, ``report.html`` and ``results.json``.

Modules, in the order a run uses them (each one's docstring documents its part):

- `format`: the JSON Lines benchmark file, how public benchmarks map onto it, loading and checking it;
- `specs`: the backend specs measured (``NAME[/PROTOCOL][:swap|:noswap]``);
- `queue`: registering users, planning against the ledger (what a rerun reuses), judging, reading back;
- `baselines`: similarity, non-personalized and random, computed in this process;
- `metrics`: accuracies, rates, users' bootstrap intervals, paired gains;
- `trust`: how far each judged backend's confidence can be trusted (cross-fitted calibration, ECE,
  reliability, accuracy above confidence thresholds, context quality against users' accuracy);
- `run`: one run end to end (`run_accuracy`) and what it measured (`AccuracyReport`);
- `report`: the terminal table, report.md, report.html and results.json;
- `synthetic`: the `pigreward demo` set as a benchmark; `convert`: a ranked-images folder (PIGBench's
  layout) to the format.
"""

from bench.accuracy.baselines import (
    BASELINES,
    SIMILARITY_TIE_EPS,
    image_features,
    non_personalized_outcomes,
    random_outcomes,
    similarity_outcomes,
    similarity_winner,
)
from bench.accuracy.convert import ConversionError, convert_ranked
from bench.accuracy.format import (
    Benchmark,
    BenchmarkError,
    BenchPair,
    BenchReference,
    BenchUser,
    load_benchmark,
)
from bench.accuracy.metrics import (
    BOOTSTRAP_DRAWS,
    LEVEL,
    REFERENCE_BUCKETS,
    BucketAccuracy,
    Gain,
    Interval,
    MethodResult,
    Outcome,
    UserAccuracy,
    VerdictTrust,
    bootstrap_accuracy,
    bootstrap_draws,
    bucket_order,
    paired_gain,
    reference_bucket,
    summarize,
)
from bench.accuracy.queue import LedgerCounts, default_tenant, register_users
from bench.accuracy.report import render_summary, write_reports
from bench.accuracy.run import AccuracyReport, build_report, run_accuracy
from bench.accuracy.specs import BackendSpec, parse_backend
from bench.accuracy.synthetic import run_synthetic, synthetic_dir, synthetic_jsonl
from bench.accuracy.trust import CalibrationResult, calibration_results, save_calibrations, trust_line

__all__ = [
    "BASELINES",
    "BOOTSTRAP_DRAWS",
    "LEVEL",
    "REFERENCE_BUCKETS",
    "SIMILARITY_TIE_EPS",
    "AccuracyReport",
    "BackendSpec",
    "BenchPair",
    "BenchReference",
    "BenchUser",
    "Benchmark",
    "BenchmarkError",
    "BucketAccuracy",
    "CalibrationResult",
    "ConversionError",
    "Gain",
    "Interval",
    "LedgerCounts",
    "MethodResult",
    "Outcome",
    "UserAccuracy",
    "VerdictTrust",
    "bootstrap_accuracy",
    "bootstrap_draws",
    "bucket_order",
    "build_report",
    "calibration_results",
    "convert_ranked",
    "default_tenant",
    "image_features",
    "load_benchmark",
    "non_personalized_outcomes",
    "paired_gain",
    "parse_backend",
    "random_outcomes",
    "reference_bucket",
    "register_users",
    "render_summary",
    "run_accuracy",
    "run_synthetic",
    "save_calibrations",
    "similarity_outcomes",
    "similarity_winner",
    "summarize",
    "synthetic_dir",
    "synthetic_jsonl",
    "trust_line",
    "write_reports",
]
