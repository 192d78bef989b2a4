"""End-to-end judgments/s of the job queue itself: real Redis, Postgres, SeaweedFS S3 and worker processes.

Judgments use the `null` benchmark backend (a fixed verdict at once, no model), so what is measured is
the orchestration every judgment pays whatever its model: the broker, the ledger (claim, context
lookup, image rows, verdict + dimension rows), the S3 GETs and image normalization. The same run
measures the raw Celery rate of a no-op task through the same broker and worker processes, as the
reference the pipeline is compared with.

    python -m bench.orchestration                                  # 10,000 judgments, 1,000 images
    python -m bench.orchestration --pools threads,prefork          # compare pools in one run
    python -m bench.orchestration --pools prefork:2@4,prefork:4@2,threads:2x4@4
    python -m bench.orchestration --judgments 2000 --profile 15    # py-spy the workers for 15 s
    python -m bench.orchestration --store file                     # what S3 costs
    python -m bench.orchestration --uri-ttl 3600                   # write-once keys: S3 read once per image

`--store file` serves the same PNGs as file:// URIs (no S3 client or server work). Every image
fits the worker's decoded-image cache (PIGREWARD_IMAGE_CACHE_MB, 1 GiB), and each is decoded once per
host: the pool processes share normalized pictures through data_dir/decoded
(PIGREWARD_DECODED_CACHE_MB; 0 turns it off, to measure without it); by default every load still asks S3 (keys may be overwritten: a GET conditional on the
cached picture's ETag, answered 304 while the object is unchanged), and `--uri-ttl` sets
PIGREWARD_IMAGE_URI_TTL_S, which trusts a URI read that recently without asking.

Set-up per run: a private redis-server, a fresh database on the local Postgres (dropped afterwards),
a private SeaweedFS server (`weed server`, its own process) for S3, N distinct
512x512 PNGs drawn with `workers.drawing.draw_image` (or smooth noise, `--image-kind noise`,
~460 KB each, the size of a real generated PNG), users with 5-15 reference pairs, contexts built
through the queue before timing. Judgments go in as `submit_judgments(..., chunk_size=--chunk)`, i.e.
`judge_chunk` messages on `bulk`. Workers are `celery -A bench.orchestration:app worker` (the project
app plus the no-op task defined here, with the project's Celery settings), by default one worker
with a prefork pool of 2 processes (one per core: the GIL makes threads no faster here) and
PIGREWARD_CHUNK_CONCURRENCY 4 (`pigreward worker` defaults to threads and 32, sized for LVLM servers).

CPU is read per process from /proc and reported per judgment: the workers' (the goal: <= 5 ms at
shipped settings) apart from the S3 server's, Postgres's and Redis's, which are other hosts in
production but share this machine's cores here.

Figures go to stdout; progress to stderr. Figures are read from the ledger: end-to-end is the first
submit to the last `finished_at`; stages come from the `timings` each judgment stores (context_s,
images_s, backend_s) and its timestamps (queue wait = started_at - created_at; the rest of
finished_at - started_at is claim + image rows + verdict write, "persist").

The parts live by concern: the private stack and worker processes in `bench.stack`, the images, users
and judgment specs in `bench.workload`, CPU readers in `bench.accounting`, the ledger reads in
`bench.ledger`, py-spy in `bench.profiling`; this module measures and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.accounting import (  # noqa: E402
    Usage,
    cpu_calibration,
    cpu_seconds,
    machine_busy_seconds,
    redis_pids,
    with_children,
)
from bench.ledger import ledger_stats, wait_terminal  # noqa: E402
from bench.profiling import finish_profile, start_profile  # noqa: E402
from bench.stack import Stack, real_stack, worker_processes  # noqa: E402
from bench.workload import bootstrap_contexts, create_users, judgment_specs, upload_images  # noqa: E402
from tasks.app import app  # noqa: E402  (the worker runs `-A bench.orchestration:app`)

if TYPE_CHECKING:
    import redis

    from models.judgments import JudgmentSpec

NOOP_QUEUE = "bulk"  # the queue the judgment chunks use: same broker path, same worker threads


@app.task(name="bench.noop")
def noop() -> None:
    """The reference: a task that does nothing, through the same broker, worker and result backend."""
    return None


# -- the no-op reference ----------------------------------------------------------------------------


def _parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _wait_drained(broker: redis.Redis, queue: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while broker.llen(queue) or broker.hlen("unacked"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {queue} not drained after {timeout_s} s")
        time.sleep(0.05)


def _done_times(results: redis.Redis, ids: Sequence[str]) -> list[datetime]:
    done: list[datetime] = []
    for start in range(0, len(ids), 2000):
        keys = [f"celery-task-meta-{i}" for i in ids[start : start + 2000]]
        for raw in results.mget(keys):
            if raw is not None:
                meta = json.loads(raw)
                if meta.get("status") == "SUCCESS":
                    done.append(_parse_ts(meta["date_done"]))
    if len(done) != len(ids):
        raise RuntimeError(f"only {len(done)} of {len(ids)} no-op tasks succeeded")
    return done


def _noop_drain(
    stack: Stack, broker: redis.Redis, results: redis.Redis, n: int, pids: Sequence[int]
) -> dict[str, float]:
    """n no-ops queued where no worker reads, then every worker told to consume them."""
    queue = f"bench-noop-{os.getpid()}"
    ids = [noop.apply_async(queue=queue).id for _ in range(n)]
    mine = [*pids, *redis_pids(stack.redis_url), os.getpid()]
    cpu0, busy0 = sum(map(cpu_seconds, mine)), machine_busy_seconds()
    t0 = datetime.now(UTC)
    replies = app.control.add_consumer(queue, reply=True, timeout=5) or []
    _wait_drained(broker, queue)
    wall = (max(_done_times(results, ids)) - t0).total_seconds()
    busy, cpu = machine_busy_seconds() - busy0, sum(map(cpu_seconds, mine)) - cpu0
    app.control.cancel_consumer(queue, reply=True, timeout=5)
    return {
        "drain_rate": n / wall,
        "drain_s": wall,
        "consumers": len(replies),
        "cpu_ms": 1e3 * cpu / n,
        "foreign_cores": max(0.0, busy - cpu) / wall,
    }


def _noop_send(broker: redis.Redis, results: redis.Redis, n: int) -> dict[str, float]:
    """n no-ops sent while the workers consume them."""
    t0 = datetime.now(UTC)
    p0 = time.perf_counter()
    ids = [noop.apply_async(queue=NOOP_QUEUE).id for _ in range(n)]
    sent_s = time.perf_counter() - p0
    _wait_drained(broker, NOOP_QUEUE)
    wall = (max(_done_times(results, ids)) - t0).total_seconds()
    return {"send_rate": n / wall, "send_s": wall, "client_send_rate": n / sent_s}


def noop_rate(stack: Stack, n: int, pids: Sequence[int] = ()) -> dict[str, float]:
    """Raw Celery rate of a no-op task through the same broker, workers and result backend.

    `drain`: n messages are queued first on a queue no worker reads, then every worker is told to
    consume it (`add_consumer`); rate = n / (that moment -> last result's date_done). This is what
    the workers can do, free of this process's sending speed. `send`: n sent while the workers
    consume (first send -> last done), bounded by one client's send rate.
    """
    import redis

    broker = redis.Redis.from_url(f"{stack.redis_url}/0")
    results = redis.Redis.from_url(f"{stack.redis_url}/1")
    out: dict[str, float] = {"n": n}
    out.update(_noop_drain(stack, broker, results, n, pids))
    out.update(_noop_send(broker, results, n))
    out["rate"] = out["drain_rate"]
    return out


# -- the judgment run -------------------------------------------------------------------------------


@dataclass
class JudgeRun:
    label: str
    n: int
    submit_s: float
    wall_s: float  # first submit -> last finished_at
    worker_wall_s: float  # first started_at -> last finished_at
    statuses: dict[str, int]
    stages: dict[str, dict[str, float]]  # stage -> mean/p50/p95 in ms
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds during the run
    machine_busy_s: float = 0.0  # all CPU time used on the machine during the run, anyone's
    db_sessions: int = 0  # Postgres connections opened during the run (pool overflow churn)

    @property
    def foreign_cores(self) -> float:
        """Cores busy with processes outside this benchmark (other users of the machine)."""
        return max(0.0, self.machine_busy_s - sum(self.cpu.values())) / self.wall_s

    @property
    def rate(self) -> float:
        return self.n / self.wall_s


STAGES = (  # in the order _stage_values gives them
    "queue wait (started - created)",
    "context lookup (context_s)",
    "image fetch+normalize (images_s)",
    "backend (backend_s)",
    "claim + image rows + persist (rest)",
    "run total (finished - started)",
)


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _stage_values(row: dict[str, Any]) -> list[float]:
    """One judgment's seconds per stage: its timings, and the rest of its run is persisting."""
    t = row["timings"] or {}
    run = (row["finished_at"] - row["started_at"]).total_seconds()
    parts = [t.get("context_s", 0.0), t.get("images_s", 0.0), t.get("backend_s", 0.0)]
    return [(row["started_at"] - row["created_at"]).total_seconds(), *parts, run - sum(parts), run]


def stage_summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, p50 and p95 in ms of each stage over the ledger rows."""
    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    for r in rows:
        for key, value in zip(STAGES, _stage_values(r), strict=True):
            stages[key].append(value)
    return {
        k: {"mean": 1e3 * statistics.fmean(v), "p50": 1e3 * _q(v, 0.5), "p95": 1e3 * _q(v, 0.95)}
        for k, v in stages.items()
    }


def run_judgments(
    specs: Sequence[JudgmentSpec],
    chunk: int,
    label: str,
    pids: Sequence[int],
    stack: Stack,
    profile_s: float = 0,
) -> tuple[JudgeRun, str | None]:
    """Submit `specs` at once, wait until all are terminal; figures from the ledger and CPU readings."""
    from tasks import submit_judgments

    watched = {
        "workers": list(pids),
        "S3 server": stack.s3_pids,
        "redis": redis_pids(stack.redis_url),
        "bench (submit+poll)": [os.getpid()],
    }
    before = Usage.read(watched)
    t0 = datetime.now(UTC)
    p0 = time.perf_counter()
    ids = submit_judgments(specs, chunk_size=chunk)
    submit_s = time.perf_counter() - p0
    profiler = start_profile(list(pids), profile_s, stack.tmp) if profile_s else None
    try:
        wait_terminal(min(ids), max(ids), len(set(ids)), timeout_s=3600)
    except BaseException:
        if profiler:
            profiler.kill()
        raise
    after = Usage.read(watched)
    profile_text = finish_profile(profiler) if profiler else None
    rows, statuses = ledger_stats(min(ids), max(ids))
    last = max(r["finished_at"] for r in rows)
    first_start = min(r["started_at"] for r in rows if r["started_at"])
    result = JudgeRun(
        label=label,
        n=len(rows),
        submit_s=submit_s,
        wall_s=(last - t0).total_seconds(),
        worker_wall_s=(last - first_start).total_seconds(),
        statuses=statuses,
        stages=stage_summary(rows),
        cpu=after.cpu_since(before),
        machine_busy_s=after.machine_busy_s - before.machine_busy_s,
        db_sessions=after.sessions - before.sessions,
    )
    return result, profile_text


# -- main -------------------------------------------------------------------------------------------


@dataclass
class PoolRun:
    """One worker set-up's figures: its no-op reference, its judgment run and py-spy's summary."""

    label: str
    ref: dict[str, float]
    run: JudgeRun
    profile: str | None


def parse_pool(spec: str, args: argparse.Namespace) -> tuple[str, int, int, int]:
    """'prefork[:N][@C]' or 'threads[:PxT][@C]' -> (pool, worker processes, concurrency, chunk conc.)."""
    spec, _, chunk = spec.partition("@")
    pool, _, size = spec.partition(":")
    chunk_conc = int(chunk) if chunk else args.chunk_concurrency
    if pool == "prefork":
        return pool, 1, int(size) if size else args.workers, chunk_conc
    if pool == "threads":
        procs, _, threads = size.partition("x")
        return (
            pool,
            int(procs) if procs else args.workers,
            int(threads) if threads else args.concurrency,
            chunk_conc,
        )
    raise SystemExit(f"unknown pool {pool!r}: prefork or threads")


def _pool_label(pool: str, processes: int, concurrency: int, chunk_conc: int) -> str:
    if pool == "prefork":
        return f"prefork: 1 worker x {concurrency} pool processes, chunk_concurrency {chunk_conc}"
    return f"threads: {processes} worker processes x {concurrency} threads, chunk_concurrency {chunk_conc}"


def _measure_pool(
    args: argparse.Namespace, stack: Stack, users: list[str], uris: list[str], k: int, spec: str
) -> PoolRun:
    """Start the set-up's workers; the no-op reference, then the judgments, through them."""
    pool, processes, concurrency, chunk_conc = parse_pool(spec, args)
    label = _pool_label(pool, processes, concurrency, chunk_conc)
    with worker_processes(
        {**stack.env, "PIGREWARD_CHUNK_CONCURRENCY": str(chunk_conc)},
        pool=pool,
        processes=processes,
        concurrency=concurrency,
        queues="context,judge,bulk",
        log_dir=stack.tmp,
        loglevel=args.loglevel,
    ) as procs:
        pids = with_children([p.pid for p in procs])
        if k == 0:
            bootstrap_contexts(users, "null")
        print(f"[{label}] no-op reference: {args.noop} tasks ...", file=sys.stderr)
        ref = noop_rate(stack, args.noop, pids)
        specs = judgment_specs(users, uris, args.judgments, tag=f"run{k}", backend="null", seed=1 + k)
        run, prof = run_judgments(specs, args.chunk, label, pids, stack, profile_s=args.profile)
    return PoolRun(label, ref, run, prof)


def _measure(args: argparse.Namespace, pools: Sequence[str]) -> tuple[list[PoolRun], list[float], int]:
    """Every pool set-up on one stack; (their runs, CPU calibrations before and after each, PNG bytes)."""
    env_extra = {
        "PIGREWARD_CHUNK_CONCURRENCY": str(args.chunk_concurrency),
        "PIGREWARD_BACKEND": "null",
        "PIGREWARD_IMAGE_URI_TTL_S": str(args.uri_ttl),
    }
    report: list[PoolRun] = []
    calibration = [cpu_calibration()]
    t_setup = time.perf_counter()
    with real_stack(env_extra) as stack:
        uris, total_bytes = upload_images(stack, args.images, args.image_kind, store=args.store)
        users = create_users(uris, args.users)
        setup_s = time.perf_counter() - t_setup
        print(
            f"set-up: {args.images} images ({total_bytes / args.images / 1024:.0f} KB mean PNG, {args.image_kind}), "
            f"{args.store}, {len(users)} users, {setup_s:.1f} s",
            file=sys.stderr,
        )
        for k, spec in enumerate(pools):
            report.append(_measure_pool(args, stack, users, uris, k, spec))
            calibration.append(cpu_calibration())
    return report, calibration, total_bytes


def _fmt_stage(run: JudgeRun) -> list[str]:
    """Per-stage wall time, and each stage's share of the workers' time spent running judgments."""
    total = run.stages["run total (finished - started)"]["mean"]
    out = [f"    {'stage':38s} {'mean ms':>9s} {'p50 ms':>9s} {'p95 ms':>9s} {'share':>7s}"]
    for k, v in run.stages.items():
        share = "" if k.startswith("queue wait") else f"{100 * v['mean'] / total:6.1f}%"
        out.append(f"    {k:38s} {v['mean']:9.2f} {v['p50']:9.2f} {v['p95']:9.2f} {share:>7s}")
    return out


def _print_header(args: argparse.Namespace, calibration: Sequence[float], total_bytes: int) -> None:
    print()
    print("== pigreward orchestration benchmark (null backend) ==")
    print(
        f"machine: {platform.node()}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"{platform.machine()}; CPU calibration (fixed workload, lower is faster) "
        + " / ".join(f"{c:.3f}" for c in calibration)
        + " s (before the runs / after each)"
    )
    print(
        f"settings: {args.judgments} judgments, {args.images} distinct 512x512 PNG images ({args.image_kind}, "
        f"{total_bytes / args.images / 1024:.0f} KB mean), {args.users} users (5-15 refs, contexts pre-built), "
        f"chunk {args.chunk}, swap off, image URI TTL {args.uri_ttl:g} s, worker loglevel "
        f"{args.loglevel}; broker Redis, ledger Postgres, images "
        + ("from SeaweedFS S3 (own process)" if args.store == "s3" else "as file:// under the image root")
    )


def _print_rates(ref: dict[str, float], run: JudgeRun) -> None:
    print(
        f"  no-op reference: {ref['drain_rate']:.0f} tasks/s draining {ref['n']:.0f} queued tasks "
        f"({ref['drain_s']:.2f} s, {ref['consumers']:.0f} consumers, {ref['cpu_ms']:.2f} ms CPU per task, "
        f"other load {ref['foreign_cores']:.2f} cores); sent while consuming: "
        f"{ref['send_rate']:.0f} tasks/s (this process sends {ref['client_send_rate']:.0f}/s)"
    )
    print(
        f"  judgments: {run.rate:.1f} judgments/s end-to-end ({run.n} in {run.wall_s:.2f} s: first submit -> "
        f"last finished_at); submit took {run.submit_s:.2f} s; first start -> last finish "
        f"{run.worker_wall_s:.2f} s = {run.n / run.worker_wall_s:.1f}/s"
    )
    print(
        f"  statuses: {run.statuses}; Postgres connections opened during the run: {run.db_sessions}"
        + (" (pool overflow churn: more concurrent sessions than pool_size)" if run.db_sessions > 100 else "")
    )
    print(f"  ratio to no-op: {run.rate / ref['rate']:.3f}")


WORKER_CPU_GOAL_MS = 5.0  # worker CPU per judgment at shipped settings
RATIO_GOAL = 0.3  # judgments/s over raw Celery no-op tasks/s, same run
SERVICES = ("S3 server", "postgres", "redis")  # other hosts in production: reported apart


def _ms(run: JudgeRun, key: str) -> float:
    return 1e3 * run.cpu.get(key, 0.0) / run.n


def _print_cpu(run: JudgeRun) -> None:
    cpu_total = sum(run.cpu.values())
    print(
        "  CPU seconds during the run: "
        + ", ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
        + f" (total {cpu_total:.1f}; {cpu_total / run.wall_s:.2f} of {os.cpu_count()} cores busy)"
    )
    print(
        f"  machine load from other processes during the run: {run.foreign_cores:.2f} cores"
        + (" (WARNING: the machine was shared; figures are low)" if run.foreign_cores > 0.2 else "")
    )
    print(
        f"  CPU ms per judgment: workers {_ms(run, 'workers'):.2f}; apart (other hosts in production): "
        + ", ".join(f"{k} {_ms(run, k):.2f}" for k in SERVICES)
        + f"; benchmark client (submit + poll) {_ms(run, 'bench (submit+poll)'):.2f}; all "
        f"{1e3 * cpu_total / run.n:.2f} (CPU-bound ceiling on {os.cpu_count()} cores: "
        f"{run.n * (os.cpu_count() or 1) / cpu_total:.0f} judgments/s)"
    )


def _print_pool(args: argparse.Namespace, r: PoolRun) -> None:
    ref, run = r.ref, r.run
    print()
    print(f"[{r.label}]")
    _print_rates(ref, run)
    _print_cpu(run)
    print("  time per judgment by stage (from the ledger's timestamps and timings):")
    print("\n".join(_fmt_stage(run)))
    print(
        f"  broker: submitting cost {1e3 * run.submit_s / run.n:.2f} ms per judgment in the client "
        f"(ledger rows + {-(-run.n // args.chunk)} judge_chunk messages), Redis "
        f"{1e3 * run.cpu.get('redis', 0.0) / run.n:.3f} ms CPU per judgment, a worker "
        f"{ref['cpu_ms'] / args.chunk:.3f} ms CPU per judgment for message handling (no-op CPU per "
        f"task / chunk); the queue wait is backlog (all judgments are submitted at once), not broker latency"
    )
    if r.profile:
        print(f"  py-spy ({args.profile:.0f} s, 200 Hz, GIL-holding thread only = Python CPU):")
        print(r.profile)


def _print_summary(report: Sequence[PoolRun], calibration: Sequence[float]) -> None:
    best = max(report, key=lambda r: r.run.rate)
    ref, run = best.ref, best.run
    print()
    print("== summary ==")
    print(
        f"SUMMARY nproc={os.cpu_count()} best={best.label}; other load on the machine during that run "
        f"{run.foreign_cores:.2f} cores; CPU calibration {max(calibration):.3f} s"
    )
    worker_ms = _ms(run, "workers")
    ratio = run.rate / ref["rate"]
    print(f"SUMMARY end-to-end {run.rate:.1f} judgments/s")
    print(
        f"SUMMARY no-op reference {ref['rate']:.0f} tasks/s (other load {ref['foreign_cores']:.2f} cores"
        + ("; under 2,000 tasks: a rough figure" if ref["n"] < 2000 else "")
        + f"); ratio {ratio:.3f} (goal >= {RATIO_GOAL}: {'MET' if ratio >= RATIO_GOAL else 'NOT MET'})"
    )
    print(
        f"SUMMARY worker CPU {worker_ms:.2f} ms per judgment (goal <= {WORKER_CPU_GOAL_MS:g}: "
        f"{'MET' if worker_ms <= WORKER_CPU_GOAL_MS else 'NOT MET'}); apart: "
        + ", ".join(f"{k} {_ms(run, k):.2f}" for k in SERVICES)
        + f", benchmark client {_ms(run, 'bench (submit+poll)'):.2f}; "
        f"all {1e3 * sum(run.cpu.values()) / run.n:.2f}"
    )
    for r in report:
        print(
            f"SUMMARY {r.label}: {r.run.rate:.1f} judgments/s, no-op {r.ref['rate']:.0f}/s, "
            f"ratio {r.run.rate / r.ref['rate']:.3f}"
        )


def _parser() -> argparse.ArgumentParser:
    assert __doc__ is not None
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--judgments", type=int, default=10_000)
    p.add_argument("--images", type=int, default=1_000)
    p.add_argument("--image-kind", choices=("draw", "noise"), default="draw")
    p.add_argument(
        "--store",
        choices=("s3", "file"),
        default="s3",
        help="s3: images from SeaweedFS S3 (the benchmark); file: file:// under the image root (no S3 cost)",
    )
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--chunk", type=int, default=50, help="judgments per judge_chunk message")
    p.add_argument(
        "--pools",
        default="prefork",
        help="comma-separated worker set-ups, each run in turn: 'prefork' (one worker, --workers pool\n"
        "processes), 'threads' (--workers processes x --concurrency threads), or explicit\n"
        "'prefork:3', 'threads:2x4'; '@N' sets chunk_concurrency (e.g. prefork:2@8)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="threads: worker processes; prefork: pool processes of one worker",
    )
    p.add_argument("--concurrency", type=int, default=4, help="threads pool: threads per worker process")
    p.add_argument("--chunk-concurrency", type=int, default=4, help="PIGREWARD_CHUNK_CONCURRENCY")
    p.add_argument("--noop", type=int, default=5_000, help="no-op tasks for the reference rate")
    p.add_argument("--loglevel", default="INFO", help="worker log level (pigreward worker: INFO)")
    p.add_argument("--profile", type=float, default=0, help="py-spy the workers for S seconds")
    p.add_argument(
        "--uri-ttl",
        type=float,
        default=0.0,
        help="PIGREWARD_IMAGE_URI_TTL_S of the workers (0, the default: every load reads S3)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pools = [x.strip() for x in args.pools.split(",") if x.strip()]
    report, calibration, total_bytes = _measure(args, pools)
    _print_header(args, calibration, total_bytes)
    for r in report:
        _print_pool(args, r)
    _print_summary(report, calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
