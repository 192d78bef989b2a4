"""The fault suite: judgments through real faults, counted from the ledger. `pigreward bench faults`.

Each run stands up a private stack: a broker of its own (Redis, or a RabbitMQ node) that can be
restarted empty, a fresh Postgres database reached through a TCP proxy (so "Postgres down" never
touches the shared server), a SeaweedFS S3 server through another proxy, an LVLM stand-in that can
misbehave, two supervised worker processes (a threads pool and a prefork pool, restarted when they die, as systemd
or Kubernetes would) and the project's beat. The workers run the shipped recovery settings unless
`--fast` says otherwise.

A scenario submits its judgments (half as single `judge` messages, half as `bulk` chunks), waits
until about a third are finished, injects its fault, lets the dependency return, and waits for every
row to end. Then, from the ledger: done / invalid / rejected / failed, lost (a submission without a
row), duplicated (more rows than submissions), stuck (not finished at the deadline), what the
sweepers re-sent, the seconds from the dependency's return (or the kill) to the last finished
judgment, and the tracebacks the workers logged.

    pigreward bench faults                                   # every scenario, Redis then RabbitMQ
    pigreward bench faults --brokers redis --scenarios kill_main,db_down_90 --judgments 300
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.accounting import children_of
from bench.stack import BUCKET, Stack
from bench.stub_lvlm import Faults, StubState, stub_lvlm_server
from bench.workload import create_users, judgment_specs, upload_images
from ops.proxy import TcpProxy
from ops.stack import (
    REPO,
    BrokerServer,
    broker_server,
    configured,
    postgres_database,
    redis_server,
    seaweed_s3,
    stack_env,
    wait_until,
)

FAST = {
    "PIGREWARD_RECONCILE_INTERVAL_S": "2",
    "PIGREWARD_CLAIM_LEASE_S": "10",
    "PIGREWARD_RETRY_BACKOFF_S": "0.5",
    "PIGREWARD_RETRY_BACKOFF_MAX_S": "2",
}
"""Recovery at test speed (the CI suite); the figures in README use the shipped settings."""

DRAIN_LIMIT_S = 120
"""Seconds from a dependency's return (or a kill) to the last finished judgment (the issue's goal)."""

LVLM_FAULTS = Faults(unavailable=0.20, hang=0.05, garbage=0.05, loop=0.05)
FAST_LVLM_FAULTS = Faults(unavailable=0.20, hang=0.05, garbage=0.05, loop=0.15)
"""The small suite's mix: 100 judgments draw few loops at 5% (the only faults that end `invalid`),
so it serves more of them to show each run that a looping answer is an invalid verdict."""


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # kill_main, kill_child, broker_restart, db_down, s3_down, lvlm, double_submit, backlog
    seconds: float = 0.0  # how long the dependency is down (lvlm: how long it misbehaves)
    redis_only: bool = False
    judgments: int | None = None  # instead of --judgments (the backlog)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("kill_main", "kill_main"),
        Scenario("kill_child", "kill_child"),
        Scenario("broker_restart", "broker_restart"),
        Scenario("db_down_10", "db_down", 10),
        Scenario("db_down_90", "db_down", 90),
        Scenario("db_down_600", "db_down", 600, redis_only=True),
        Scenario("s3_down_15", "s3_down", 15),
        Scenario("s3_down_90", "s3_down", 90),
        Scenario("s3_down_600", "s3_down", 600, redis_only=True),
        Scenario("lvlm_faults", "lvlm", 60),
        Scenario("double_submit", "double_submit"),
        Scenario("backlog_20000", "backlog", redis_only=True, judgments=20_000),
    )
}


# -- the stack ------------------------------------------------------------------------------------


class Supervisor:
    """Worker processes restarted a second after they exit, as a process supervisor would."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.specs = [("threads", 4), ("prefork", 2)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(self.specs)
        self.restarts = 0
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._run, daemon=True)

    def log(self, i: int) -> Path:
        return self.log_dir / f"worker-{self.specs[i][0]}.log"

    def start(self) -> None:
        for i in range(len(self.specs)):
            self._spawn(i)
        for i in range(len(self.specs)):
            self._ready(i)
        self._watch.start()

    def _ready(self, i: int) -> None:
        wait_until(lambda: b"ready." in self.log(i).read_bytes(), 90, f"worker {i}")

    def _spawn(self, i: int) -> None:
        pool, concurrency = self.specs[i]
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--queues=context,judge,bulk"]
        argv += [
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--hostname=faults{i}@%h",
            "--loglevel=INFO",
            "--without-gossip",  # as `pigreward worker` runs
        ]
        with self.log(i).open("ab") as log:
            self.procs[i] = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    time.sleep(1.0)
                    self.restarts += 1
                    self._spawn(i)

    def kill_main(self, i: int = 0) -> None:
        proc = self.procs[i]
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)  # its pool children (prefork) exit with it: same group below
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def kill_child(self, i: int = 1) -> int:
        proc = self.procs[i]
        assert proc is not None
        children = children_of(proc.pid)
        if not children:
            raise RuntimeError("the prefork worker has no pool children")
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)

    def log_sizes(self) -> list[int]:
        return [self.log(i).stat().st_size if self.log(i).exists() else 0 for i in range(len(self.specs))]

    def tracebacks(self, since: Sequence[int]) -> list[str]:
        """The exception line ending each traceback logged after the offsets `since`."""
        found = []
        for i, offset in enumerate(since):
            with self.log(i).open("rb") as fh:
                fh.seek(offset)
                lines = fh.read().decode(errors="replace").splitlines()
            for n, line in enumerate(lines):
                if line.startswith("Traceback"):
                    end = next((x for x in lines[n + 1 :] if x and not x.startswith((" ", "\t"))), "?")
                    found.append(f"{self.specs[i][0]}: {end[:200]}")
        return found

    def redundant(self, since: Sequence[int]) -> int:
        """Deliveries that found their row already taken or finished (and so did nothing): what every
        message sent for a row that still had a live message or holder costs."""
        total = 0
        for i, offset in enumerate(since):
            with self.log(i).open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
            total += text.count("'skipped': True")  # a judge message
            total += sum(int(n) for n in re.findall(r"'skipped': (\d+)", text))  # rows of a chunk
        return total


@dataclass
class FaultStack:
    broker: BrokerServer
    db_proxy: TcpProxy
    s3_proxy: TcpProxy
    lvlm: StubState
    workers: Supervisor
    stack: Stack
    users: list[str]
    uris: list[str]
    worker_env: dict[str, str]
    lvlm_faults: Faults


def _copy_logs(tmp: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in tmp.glob("*.log"):
        shutil.copy(log, target / log.name)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def _through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _proxy_for(url: str) -> TcpProxy:
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).up()


@contextmanager
def fault_stack(
    broker_kind: str,
    *,
    fast: bool = False,
    users: int = 100,
    images: int = 200,
    log: Callable[[str], None] = print,
    keep_logs: Path | None = None,
) -> Iterator[FaultStack]:
    """Everything a scenario needs, configured into this process (which talks to the services directly)."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pigreward-faults-")))
        if keep_logs is not None:
            stack.callback(_copy_logs, tmp, keep_logs / broker_kind)
        broker = stack.enter_context(broker_server(broker_kind, tmp))
        # results in Redis (with RabbitMQ too, as README advises): a broker restart does not touch them
        results = broker.url if broker.kind == "redis" else stack.enter_context(redis_server(tmp))
        database_url = stack.enter_context(postgres_database())
        s3_endpoint = stack.enter_context(seaweed_s3(tmp))
        lvlm_url, lvlm = stack.enter_context(stub_lvlm_server())
        db_proxy, s3_proxy = _proxy_for(database_url), _proxy_for(s3_endpoint)
        stack.callback(db_proxy.down)
        stack.callback(s3_proxy.down)
        (tmp / "images").mkdir()
        env = stack_env(
            redis_url=broker.url,
            database_url=database_url,
            s3_endpoint=s3_endpoint,
            image_root=tmp / "images",
            data_dir=tmp / "data",
        )
        env.update(
            {
                "PIGREWARD_BROKER_URL": broker.url,
                "PIGREWARD_RESULT_BACKEND": f"{results}/1",
                "PIGREWARD_SGLANG_URL": lvlm_url,
                **(FAST if fast else {}),
            }
        )
        stack.enter_context(configured(env))
        st = Stack(env, database_url, broker.url, s3_endpoint, [], tmp)  # no CPU accounting here
        st.s3().create_bucket(Bucket=BUCKET)
        uris, _ = upload_images(st, images, "draw", size=128)
        names = create_users(uris, users)
        worker_env = {
            **env,
            "PIGREWARD_DATABASE_URL": _through(database_url, db_proxy),
            "PIGREWARD_S3_ENDPOINT_URL": _through(s3_endpoint, s3_proxy),
        }
        workers = Supervisor(worker_env, tmp)
        workers.start()
        stack.callback(workers.stop)
        beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "beat",
                f"--schedule={tmp / 'beat'}",
                "--loglevel=WARNING",
            ],
            cwd=REPO,
            env={**os.environ, **worker_env},
            stdout=(tmp / "beat.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop_process, beat)
        log(
            f"{broker_kind}: stack up ({len(names)} users, {len(uris)} images){' [fast recovery settings]' if fast else ''}"
        )
        yield FaultStack(
            broker,
            db_proxy,
            s3_proxy,
            lvlm,
            workers,
            st,
            names,
            uris,
            worker_env,
            FAST_LVLM_FAULTS if fast else LVLM_FAULTS,
        )


# -- a scenario -----------------------------------------------------------------------------------


@dataclass
class Result:
    broker: str
    scenario: str
    judgments: int
    counts: dict[str, int]
    lost: int
    duplicated: int
    stuck: int
    resent: dict[str, int]
    redundant: int
    drain_s: float | None
    tracebacks: int
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """0 lost, duplicated, stuck, failed and tracebacks; drained within DRAIN_LIMIT_S of the
        dependency's return; a backlog never re-sent."""
        if self.lost or self.duplicated or self.stuck or self.counts.get("failed", 0) or self.tracebacks:
            return False
        if self.drain_s is not None and self.drain_s > DRAIN_LIMIT_S:
            return False
        return self.drain_s is not None or not any(v for k, v in self.resent.items() if not k.startswith("_"))


def _ledger(tag: str) -> tuple[dict[str, int], int, datetime | None]:
    """(counts by status, rows, last finished_at) of a scenario's judgments."""
    import sqlalchemy as sa
    from sqlmodel import col, func, select

    from models.db import session_scope
    from models.tables import Judgment
    from tasks.runtime import get_db

    mine = col(Judgment.prompt).like(f"%[{tag} %")
    with session_scope(get_db()) as session:
        counts = {
            str(s): int(n)
            for s, n in session.exec(
                select(Judgment.status, func.count()).where(mine).group_by(col(Judgment.status))
            )
        }
        last = session.exec(select(sa.func.max(col(Judgment.finished_at))).where(mine)).one()
    return counts, sum(counts.values()), last


def _resent_totals() -> dict[str, int]:
    from models.db import session_scope
    from models.recovery import sweep_totals
    from tasks.runtime import get_db

    with session_scope(get_db()) as session:
        state = sweep_totals(session=session)
        return {**(state.resent if state else {}), "_sweeps": state.sweeps if state else 0}


def _finished(counts: dict[str, int]) -> int:
    from core.enums import TERMINAL_STATUSES

    return sum(n for s, n in counts.items() if s in TERMINAL_STATUSES)


def _wait(tag: str, n: int, share: float, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        counts, _, _ = _ledger(tag)
        if _finished(counts) >= share * n or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def _submit(fs: FaultStack, scenario: Scenario, tag: str, n: int) -> None:
    from tasks.submit import submit_judgments

    backend = "sglang" if scenario.kind == "lvlm" else "lite"
    specs = judgment_specs(fs.users, fs.uris, n, tag, backend, seed=hash(tag) % 1000)
    half = n // 2

    def once() -> None:
        submit_judgments(specs[:half])
        submit_judgments(specs[half:], chunk_size=50)

    if scenario.kind == "double_submit":  # the same judgments from two clients at once
        threads = [threading.Thread(target=once) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        once()


def _inject(fs: FaultStack, scenario: Scenario, notes: list[str]) -> datetime:
    """The fault; returns when the dependency was back (or when the kill happened)."""
    kind = scenario.kind
    if kind == "kill_main":
        fs.workers.kill_main(0)
        notes.append("threads worker's main process killed -9; restarted after 1 s")
    elif kind == "kill_child":
        pid = fs.workers.kill_child(1)
        notes.append(f"prefork pool child {pid} killed -9")
    elif kind == "broker_restart":
        fs.broker.restart_empty()
        notes.append(f"{fs.broker.kind} restarted empty")
    elif kind in ("db_down", "s3_down"):
        proxy = fs.db_proxy if kind == "db_down" else fs.s3_proxy
        proxy.down()
        time.sleep(scenario.seconds)
        proxy.up()
    elif kind == "lvlm":
        time.sleep(scenario.seconds)
        served = dict(fs.lvlm.served)
        fs.lvlm.heal()
        notes.append(f"faults served: {served}")
    return datetime.now(UTC)


def run_scenario(fs: FaultStack, scenario: Scenario, n: int, *, settle_s: float = 600) -> Result:
    """One scenario on the stack (see the module docstring)."""
    n = scenario.judgments or n
    tag = f"{scenario.name}-{uuid.uuid4().hex[:6]}"
    notes: list[str] = []
    before, offsets = _resent_totals(), fs.workers.log_sizes()
    if scenario.kind == "lvlm":
        fs.lvlm.faults, fs.lvlm.served = fs.lvlm_faults, type(fs.lvlm.served)()
        fs.lvlm.healed.clear()
    if scenario.kind == "backlog":
        return _run_backlog(fs, scenario, n, tag, before, offsets)
    _submit(fs, scenario, tag, n)
    if scenario.kind != "lvlm":
        _wait(tag, n, 1 / 3, 300)
    back = _inject(fs, scenario, notes)
    counts = _wait(tag, n, 1.0, settle_s)
    _, rows, last = _ledger(tag)
    drain_s = (last - back).total_seconds() if last and last > back else 0.0
    return _result(fs, scenario, n, counts, rows, before, offsets, drain_s, notes)


def _result(
    fs: FaultStack,
    scenario: Scenario,
    n: int,
    counts: dict[str, int],
    rows: int,
    before: dict[str, int],
    offsets: Sequence[int],
    drain_s: float | None,
    notes: list[str],
) -> Result:
    """A scenario's outcome from the ledger counts, the sweepers' re-sends since `before` and the
    workers' logs since `offsets` (each traceback's last line joins the notes)."""
    after = _resent_totals()
    errors = fs.workers.tracebacks(offsets)
    return Result(
        fs.broker.kind,
        scenario.name,
        n,
        counts,
        lost=max(0, n - rows),
        duplicated=max(0, rows - n),
        stuck=rows - _finished(counts),
        resent={k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)},
        redundant=fs.workers.redundant(offsets),
        drain_s=drain_s,
        tracebacks=len(errors),
        notes=notes + sorted(set(errors)),
    )


def _run_backlog(
    fs: FaultStack, scenario: Scenario, n: int, tag: str, before: dict[str, int], offsets: Sequence[int]
) -> Result:
    """Submit a big backlog, let the sweepers run at least three times while it is busy, count re-sends."""
    from tasks.submit import submit_judgments

    specs = judgment_specs(fs.users, fs.uris, n, tag, "lite", seed=7)
    for start in range(0, n, 1000):
        submit_judgments(specs[start : start + 1000], chunk_size=1 if start % 2000 == 0 else 50)
    wait_until(lambda: _resent_totals()["_sweeps"] - before["_sweeps"] >= 3, 600, "three sweeps")
    counts, rows, _ = _ledger(tag)
    busy = rows - _finished(counts)  # still waiting in the broker or running after three sweeps
    counts = _wait(tag, n, 1.0, 3600)  # re-sends counted over every sweep to the last finished row
    _, rows, _ = _ledger(tag)
    sweeps = _resent_totals()["_sweeps"] - before["_sweeps"]
    notes = [
        f"{sweeps} sweeps from the first submit to the last verdict; "
        f"{busy} judgments still queued or running after the first three"
    ]
    return _result(fs, scenario, n, counts, rows, before, offsets, None, notes)


# -- the report -----------------------------------------------------------------------------------

COLUMNS = (
    "broker",
    "scenario",
    "n",
    "done",
    "invalid",
    "rejected",
    "failed",
    "lost",
    "dup",
    "stuck",
    "re-sent",
    "redundant",
    "drain_s",
    "tracebacks",
)


def render(results: Sequence[Result]) -> str:
    lines = ["  ".join(f"{c:>10}" for c in COLUMNS)]
    for r in results:
        resent = sum(v for k, v in r.resent.items() if not k.startswith("_"))
        cells = [r.broker, r.scenario, r.judgments]
        cells += [r.counts.get(s, 0) for s in ("done", "invalid", "rejected", "failed")]
        cells += [
            r.lost,
            r.duplicated,
            r.stuck,
            resent,
            r.redundant,
            "-" if r.drain_s is None else f"{r.drain_s:.0f}",
            r.tracebacks,
        ]
        lines.append("  ".join(f"{c!s:>10}" for c in cells))
    for r in results:
        details = {k: v for k, v in r.resent.items() if not k.startswith("_")}
        lines.append(f"{r.broker}/{r.scenario}: re-sent {details or 'nothing'}; {'; '.join(r.notes) or ''}")
    bad = [f"{r.broker}/{r.scenario}" for r in results if not r.ok]
    lines.append(
        "SUMMARY "
        + (
            f"all scenarios: 0 lost, 0 duplicated, 0 stuck, 0 failed, drained within {DRAIN_LIMIT_S} s, "
            "no backlog re-sent"
            if not bad
            else f"NOT MET: {', '.join(bad)}"
        )
    )
    return "\n".join(lines)


def run(
    brokers: Sequence[str],
    scenarios: Sequence[Scenario],
    n: int,
    *,
    fast: bool,
    log: Callable[[str], None] = print,
    keep_logs: Path | None = None,
) -> list[Result]:
    results = []
    for broker in brokers:
        chosen = [s for s in scenarios if broker == "redis" or not s.redis_only]
        with fault_stack(broker, fast=fast, log=log, keep_logs=keep_logs) as fs:
            for scenario in chosen:
                started = time.monotonic()
                result = run_scenario(fs, scenario, n)
                results.append(result)
                row = render([result]).splitlines()[1].strip()
                log(f"{broker}/{scenario.name}: {row} ({time.monotonic() - started:.0f} s)")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="redis,rabbitmq", help="redis and/or rabbitmq")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"any of: {', '.join(SCENARIOS)}")
    p.add_argument(
        "--judgments", type=int, default=1000, help="judgments per scenario (the backlog has its own)"
    )
    p.add_argument(
        "--fast", action="store_true", help="recovery at test speed instead of the shipped settings"
    )
    p.add_argument("--logs", type=Path, default=None, help="keep the worker and beat logs in this folder")
    p.add_argument(
        "--lvlm-seconds", type=float, default=None, help="how long the LVLM misbehaves (default 60)"
    )
    args = p.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenarios {unknown}")
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    scenarios = [SCENARIOS[name] for name in names]
    if args.lvlm_seconds is not None:
        scenarios = [replace(s, seconds=args.lvlm_seconds) if s.kind == "lvlm" else s for s in scenarios]
    results = run(
        args.brokers.split(","), scenarios, args.judgments, fast=args.fast, log=log, keep_logs=args.logs
    )
    print(render(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
