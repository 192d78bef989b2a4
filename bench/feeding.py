"""Feeding the GPU: does one worker process keep an LVLM server busy?

SGLang batches whatever is in flight, so what a worker must deliver is concurrency: with a server
latency L and R requests in flight, the best a worker can do is R / L judgments/s (Little's law).
This runs the real stack (private Redis, a fresh Postgres database, SeaweedFS S3) and ONE worker process
(`pigreward worker`, threads pool) with the `sglang` backend pointed at
`bench.stub_lvlm.stub_lvlm_server(delay=L)`, an OpenAI-compatible server that answers every
request after L seconds, with no limit on concurrency, and counts requests in flight.
Bulk judgments (`submit_judgments(..., chunk_size=--chunk)`, swap off by default so one judgment is
one request) are timed from the first submit to the last `finished_at` in the ledger.

    python -m bench.feeding                                    # 1024 judgments: defaults, then tuned
    python -m bench.feeding --judgments 512 --setups 4x64@64/64,2x256@64/64,2x512@128/128

Two effects decide how close a worker gets (see the per-second in-flight line it prints):

- the chunk barrier: a `judge_chunk` task ends only when its slowest judgment ends, and only then
  does its worker thread take the next chunk. With chunk size = chunk_concurrency (4x64@64) every
  chunk is one wave, and in flight drops each time the next chunks start. Chunks much larger than
  chunk_concurrency (here one per worker thread, 2x512@64) and worker threads x chunk_concurrency
  ~ 2x max_in_flight (prepared requests wait on the engine's semaphore and go out the moment a slot
  frees) keep the server full.
- the GIL: a judgment costs the worker process ~15 ms of CPU (ledger, S3 GETs, PNG data URLs,
  JSON; printed as "CPU: worker process"), so one process feeds at most ~60 judgments/s: plenty
  for 64 in flight at 2 s (32/s). A faster server or more in flight needs more worker processes.

Reported: judgments/s while the server was busy (first request in -> last request out, i.e. what
the worker delivers once it is feeding the server) and end to end (first submit -> last
`finished_at`, which adds the ledger writes before the first request and after the last), the
server's max and time-averaged in-flight count (sampled every 10 ms), and their ratio to
in-flight / latency. Goal: max in flight >= 64 and judgments/s while busy within 10% of
max in-flight / latency. Contexts (one reasoner request per reference pair) are built before timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.accounting import (  # noqa: E402
    cpu_calibration,
    cpu_seconds,
    machine_busy_seconds,
    postgres_backends,
    postgres_cpu_since,
    redis_pids,
)
from bench.ledger import ledger_stats, wait_terminal  # noqa: E402
from bench.stack import Stack, real_stack  # noqa: E402
from bench.stub_lvlm import StubState, stub_lvlm_server  # noqa: E402
from bench.workload import bootstrap_contexts, create_users, judgment_specs, upload_images  # noqa: E402

if TYPE_CHECKING:
    from models.judgments import JudgmentSpec


class InFlightSampler:
    """Samples the fake server's in-flight count every `period` seconds in a thread."""

    def __init__(self, state: StubState, period: float = 0.01) -> None:
        self.state = state
        self.period = period
        self.samples: list[tuple[float, int]] = []  # (time.time(), in flight)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.state.in_flight))
            time.sleep(self.period)

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, start: float, end: float) -> float:
        window = [n for t, n in self.samples if start <= t <= end]
        return statistics.fmean(window) if window else float("nan")

    def busy_window(self) -> tuple[float, float]:
        """First and last sample with a request in flight."""
        busy = [t for t, n in self.samples if n > 0]
        return (busy[0], busy[-1]) if busy else (float("nan"), float("nan"))

    def per_second(self, start: float, end: float) -> list[float]:
        """Mean in flight in each whole second from start to end."""
        out: dict[int, list[int]] = {}
        for t, n in self.samples:
            if start <= t <= end:
                out.setdefault(int(t - start), []).append(n)
        return [statistics.fmean(out.get(k, [0])) for k in range(int(end - start) + 1)]


@dataclass(frozen=True)
class Setup:
    """One worker set-up: threads pool size, judgments per chunk, chunk fan-out, HTTP in-flight limit."""

    worker_threads: int
    chunk: int
    chunk_concurrency: int
    in_flight: int

    @classmethod
    def parse(cls, spec: str) -> Setup:
        """'TxC@F/I': T worker threads, chunks of C judgments, chunk_concurrency F, max_in_flight I."""
        try:
            head, _, limit = spec.partition("/")
            size, _, fan = head.partition("@")
            threads, _, chunk = size.partition("x")
            return cls(int(threads), int(chunk), int(fan), int(limit or 64))
        except ValueError:
            raise SystemExit(f"bad set-up {spec!r}: expected e.g. 4x64@64/64") from None

    def __str__(self) -> str:
        return (
            f"{self.worker_threads} worker threads x chunks of {self.chunk}, chunk_concurrency "
            f"{self.chunk_concurrency}, max_in_flight {self.in_flight}"
        )

    @property
    def tag(self) -> str:
        return f"{self.worker_threads}x{self.chunk}@{self.chunk_concurrency}/{self.in_flight}"


@dataclass
class FeedRun:
    setup: Setup
    n: int
    statuses: dict[str, int]
    e2e_s: float
    server_window_s: float  # first request in flight -> last request done (10 ms sampling)
    mean_in_flight: float  # time-averaged over the server window
    max_in_flight: int
    per_second: list[float]
    requests: int
    worker_cpu_s: float
    bench_cpu_s: float
    services_cpu_s: float  # S3 server, redis, our Postgres backends
    foreign_cpu_s: float  # everything else busy on the machine meanwhile (other users)

    @property
    def e2e_rate(self) -> float:
        return self.n / self.e2e_s

    @property
    def window_rate(self) -> float:
        return self.n / self.server_window_s


class _Cpu(NamedTuple):
    """CPU seconds during a timed run, by who used them."""

    worker: float
    bench: float  # this process: the fake server and the polling
    services: float  # S3 server, redis, our Postgres backends
    foreign: float  # everything else busy on the machine meanwhile (other users)


class _CpuWatch:
    """CPU readings from its creation on: the worker process, this one, the services, the machine."""

    def __init__(self, stack: Stack, worker_pid: int) -> None:
        self.worker_pid = worker_pid
        self.worker0, self.bench0 = cpu_seconds(worker_pid), time.process_time()
        self.services = [*stack.s3_pids, *redis_pids(stack.redis_url)]
        self.services0 = sum(map(cpu_seconds, self.services))
        self.pg0, self.busy0 = postgres_backends(), machine_busy_seconds()

    def since(self) -> _Cpu:
        worker = cpu_seconds(self.worker_pid) - self.worker0
        bench = time.process_time() - self.bench0
        busy = machine_busy_seconds() - self.busy0
        services = sum(map(cpu_seconds, self.services)) - self.services0
        services += postgres_cpu_since(self.pg0)
        return _Cpu(worker, bench, services, max(0.0, busy - worker - bench - services))


@dataclass
class _Timed:
    """One timed submission: its judgment ids and start, the in-flight samples, what the server saw."""

    ids: list[int]
    t0: datetime
    sampler: InFlightSampler
    requests: int
    max_in_flight: int
    cpu: _Cpu


def _worker_env(stack: Stack, url: str, setup: Setup) -> dict[str, str]:
    return {
        **stack.env,
        "PIGREWARD_BACKEND": "sglang",
        "PIGREWARD_SGLANG_URL": url,
        "PIGREWARD_SGLANG_MAX_IN_FLIGHT": str(setup.in_flight),
        "PIGREWARD_CHUNK_CONCURRENCY": str(setup.chunk_concurrency),
    }


def _submit_and_wait(
    stack: Stack, state: StubState, worker_pid: int, specs: Sequence[JudgmentSpec], chunk: int
) -> _Timed:
    """Submit `specs` at once and wait until all are terminal, sampling the server's in-flight count."""
    from tasks import submit_judgments

    state.bodies.clear()
    state.max_in_flight = 0
    calls0 = sum(state.calls.values())
    watch = _CpuWatch(stack, worker_pid)
    with InFlightSampler(state) as sampler:
        t0 = datetime.now(UTC)
        ids = submit_judgments(specs, chunk_size=chunk)
        wait_terminal(min(ids), max(ids), len(set(ids)), timeout_s=1800)
    cpu = watch.since()
    return _Timed(ids, t0, sampler, sum(state.calls.values()) - calls0, state.max_in_flight, cpu)


def _feed_run(setup: Setup, timed: _Timed) -> FeedRun:
    """The run's figures: times from the ledger, the server's busy window from the samples."""
    rows, statuses = ledger_stats(min(timed.ids), max(timed.ids))
    last = max(r["finished_at"] for r in rows)
    lo, hi = timed.sampler.busy_window()
    return FeedRun(
        setup=setup,
        n=len(rows),
        statuses=statuses,
        e2e_s=(last - timed.t0).total_seconds(),
        server_window_s=hi - lo,
        mean_in_flight=timed.sampler.mean(lo, hi),
        max_in_flight=timed.max_in_flight,
        per_second=timed.sampler.per_second(timed.t0.timestamp(), last.timestamp()),
        requests=timed.requests,
        worker_cpu_s=timed.cpu.worker,
        bench_cpu_s=timed.cpu.bench,
        services_cpu_s=timed.cpu.services,
        foreign_cpu_s=timed.cpu.foreign,
    )


def run_one(
    stack: Stack, users: Sequence[str], uris: Sequence[str], args: argparse.Namespace, setup: Setup, k: int
) -> FeedRun:
    """One set-up: a fresh stub server and worker process, the judgments through them."""
    from ops.stack import celery_worker

    with stub_lvlm_server(delay=args.delay) as (url, state):
        log = stack.tmp / f"feeding-worker-{k}.log"
        env = _worker_env(stack, url, setup)
        with celery_worker(
            env, "context,judge,bulk", log, pool="threads", concurrency=setup.worker_threads
        ) as proc:
            if k == 0:
                print("building contexts (reasoner requests) ...", file=sys.stderr)
                bootstrap_contexts(users, "sglang")
            specs = judgment_specs(
                users, uris, args.judgments, tag=f"feed{k}", backend="sglang", seed=7 + k, swap=args.swap
            )
            timed = _submit_and_wait(stack, state, proc.pid, specs, setup.chunk)
    return _feed_run(setup, timed)


def _parser() -> argparse.ArgumentParser:
    assert __doc__ is not None
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--judgments", type=int, default=1024)
    p.add_argument(
        "--setups",
        default="4x50@32/64,2x512@64/64",
        help="worker set-ups run in turn, 'TxC@F/I': T threads in the worker's pool, chunks of C\n"
        "judgments, PIGREWARD_CHUNK_CONCURRENCY F, PIGREWARD_SGLANG_MAX_IN_FLIGHT I.\n"
        "Default: the shipped defaults (4 threads, API batches' chunks of 50, chunk_concurrency 32,\n"
        "max_in_flight 64) and the tuned shape (few large chunks: no chunk barrier)",
    )
    p.add_argument("--delay", type=float, default=2.0, help="server latency per request, seconds")
    p.add_argument("--swap", action="store_true", help="judge both orders (2 requests per judgment)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--users", type=int, default=8)
    return p


def _ideal(r: FeedRun, args: argparse.Namespace) -> float:
    """Judgments/s a worker would reach with its max in flight at the server's latency."""
    delay: float = args.delay
    return r.max_in_flight / delay / (2 if args.swap else 1)


def _met(r: FeedRun, args: argparse.Namespace) -> bool:
    return r.max_in_flight >= 64 and r.window_rate >= 0.9 * _ideal(r, args)


def _print_header(args: argparse.Namespace, calibration: float, total: int) -> None:
    per_judgment = 2 if args.swap else 1
    print()
    print("== pigreward feeding benchmark (sglang backend, one worker process) ==")
    print(
        f"machine: {platform.node()}, nproc {os.cpu_count()}, Python {platform.python_version()}; "
        f"CPU calibration {calibration:.3f} s (bench.accounting.cpu_calibration); "
        f"fake OpenAI-compatible server, {args.delay:.1f} s per request, unlimited concurrency"
    )
    print(
        f"settings: {args.judgments} judgments, swap {'on' if args.swap else 'off'} ({per_judgment} request(s) "
        f"per judgment), one worker process (threads pool), "
        f"{args.images} images ({total / args.images / 1024:.0f} KB PNG) from SeaweedFS S3, "
        f"{args.users} users "
        "(contexts pre-built); Redis + Postgres"
    )


def _print_run(r: FeedRun, args: argparse.Namespace) -> None:
    per_judgment = 2 if args.swap else 1
    ideal = _ideal(r, args)
    print()
    print(f"[{r.setup}]")
    print(f"  statuses: {r.statuses}; server requests during the run: {r.requests}")
    print(
        f"  judgments/s: {r.window_rate:.1f} while the server was busy ({r.n} in {r.server_window_s:.1f} s, "
        f"first request in -> last out); {r.e2e_rate:.1f} end-to-end ({r.e2e_s:.1f} s, first submit -> "
        f"last finished_at)"
    )
    print(
        f"  server in flight: max {r.max_in_flight}, time-averaged {r.mean_in_flight:.1f} over the busy "
        f"window (sampled every 10 ms)"
    )
    print(
        f"  in-flight / latency: {r.max_in_flight} / {args.delay:g} s = {ideal:.1f} judgments/s; measured "
        f"{100 * r.window_rate / ideal:.0f}% of it while busy, {100 * r.e2e_rate / ideal:.0f}% end-to-end "
        f"(mean in flight / latency = {r.mean_in_flight / args.delay / per_judgment:.1f})"
    )
    print(f"  mean in flight per second: {' '.join(f'{x:.0f}' for x in r.per_second)}")
    print(
        f"  CPU: worker process {r.worker_cpu_s:.1f} s ({1e3 * r.worker_cpu_s / r.n:.1f} ms per judgment, "
        f"{r.worker_cpu_s / r.e2e_s:.2f} cores); this process (fake server + polling) {r.bench_cpu_s:.1f} s; "
        f"S3 server+redis+postgres {r.services_cpu_s:.1f} s"
    )
    foreign = r.foreign_cpu_s / r.e2e_s
    print(
        f"  machine load from other processes during the run: {foreign:.2f} cores"
        + (" (WARNING: the machine was shared)" if foreign > 0.2 else "")
    )


def _print_summary(runs: Sequence[FeedRun], args: argparse.Namespace) -> None:
    print()
    print("== summary ==")
    for r in runs:
        ideal = _ideal(r, args)
        print(
            f"SUMMARY {r.setup.tag}: server max in flight {r.max_in_flight} (mean "
            f"{r.mean_in_flight:.1f}); {r.window_rate:.1f} judgments/s while busy = "
            f"{100 * r.window_rate / ideal:.0f}% of in-flight/latency {ideal:.1f} ({r.e2e_rate:.1f}/s "
            f"end-to-end = {100 * r.e2e_rate / ideal:.0f}%); goal (>= 64 in flight, within 10%): "
            f"{'MET' if _met(r, args) else 'NOT MET'}; other load {r.foreign_cpu_s / r.e2e_s:.2f} cores"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setups = [Setup.parse(x.strip()) for x in args.setups.split(",") if x.strip()]

    runs: list[FeedRun] = []
    calibration = cpu_calibration()
    with real_stack({"PIGREWARD_BACKEND": "sglang"}) as stack:
        uris, total = upload_images(stack, args.images, "draw")
        users = create_users(uris, args.users)
        for k, setup in enumerate(setups):
            runs.append(run_one(stack, users, uris, args, setup, k))

    _print_header(args, calibration, total)
    for r in runs:
        _print_run(r, args)
    _print_summary(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
