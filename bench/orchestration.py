"""End-to-end judgments/s of the job queue itself: real Redis, Postgres, moto S3 and worker processes.

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
fits the worker's decoded-image cache (PIGREWARD_IMAGE_CACHE_MB, 1 GiB), so each is decoded once per
process; by default every load still GETs the object from S3 (keys may be overwritten), and
`--uri-ttl` sets PIGREWARD_IMAGE_URI_TTL_S, which trusts a URI read that recently.

Set-up per run: a private redis-server, a fresh database on the local Postgres (dropped afterwards),
moto's S3 server in a child process (so its CPU is not charged to this process's GIL), N distinct
512x512 PNGs drawn with `workers.drawing.draw_image` (or smooth noise, `--image-kind noise`,
~460 KB each, the size of a real generated PNG), users with 5-15 reference pairs, contexts built
through the queue before timing. Judgments go in as `submit_judgments(..., chunk_size=--chunk)`, i.e.
`judge_chunk` messages on `bulk`. Workers are `celery -A bench.orchestration:app worker` (the project
app plus the no-op task defined here, with the project's Celery settings), by default one worker
with a prefork pool of 2 processes (one per core: the GIL makes threads no faster here) and
PIGREWARD_CHUNK_CONCURRENCY 4 (`pigreward worker` defaults to threads and 32, sized for LVLM servers).

Figures go to stdout; progress to stderr. Figures are read from the ledger: end-to-end is the first
submit to the last `finished_at`; stages come from the `timings` each judgment stores (context_s,
images_s, backend_s) and its timestamps (queue wait = started_at - created_at; the rest of
finished_at - started_at is claim + image rows + verdict write, "persist").
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tasks.app import app  # noqa: E402  (the worker runs `-A bench.orchestration:app`)

BUCKET = "pigreward-bench"
NOOP_QUEUE = "bulk"  # the queue the judgment chunks use: same broker path, same worker threads
TERMINAL = ("done", "invalid", "rejected", "failed", "cancelled")


@app.task(name="bench.noop")
def noop() -> None:
    """The reference: a task that does nothing, through the same broker, worker and result backend."""
    return None


# -- services ---------------------------------------------------------------------------------------


def _moto_child(conn: Any) -> None:  # runs in a spawned process
    import logging

    sys.path.insert(0, str(REPO))
    from ops.stack import moto_s3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per GET otherwise

    with moto_s3() as url:
        conn.send(url)
        conn.recv()  # until the parent says stop (or dies: EOFError)


@contextmanager
def moto_s3_process() -> Iterator[tuple[str, int]]:
    """`ops.stack.moto_s3` in its own process; yields (endpoint URL, pid)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_moto_child, args=(child,), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("moto S3 server did not start")
        yield parent.recv(), proc.pid  # type: ignore[misc]
    finally:
        with suppress(OSError):
            parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


@dataclass
class Stack:
    env: dict[str, str]
    database_url: str
    redis_url: str
    s3_endpoint: str
    moto_pid: int
    tmp: Path

    def s3(self):  # type: ignore[no-untyped-def]
        from ops.stack import s3_client

        return s3_client(self.s3_endpoint)


@contextmanager
def real_stack(extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Redis + a fresh Postgres database + moto S3 (own process), configured into this process."""
    from ops.stack import configured, postgres_database, redis_server, stack_env

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pigreward-bench-")))
        redis_url = stack.enter_context(redis_server(tmp))
        database_url = stack.enter_context(postgres_database())
        s3_endpoint, moto_pid = stack.enter_context(moto_s3_process())
        (tmp / "images").mkdir()
        env = {
            **stack_env(
                redis_url=redis_url,
                database_url=database_url,
                s3_endpoint=s3_endpoint,
                image_root=tmp / "images",
                data_dir=tmp / "data",
            ),
            **(extra_env or {}),
        }
        stack.enter_context(configured(env))
        st = Stack(env, database_url, redis_url, s3_endpoint, moto_pid, tmp)
        st.s3().create_bucket(Bucket=BUCKET)
        yield st


@contextmanager
def worker_processes(
    env: dict[str, str],
    *,
    pool: str,
    processes: int,
    concurrency: int,
    queues: str,
    log_dir: Path,
    loglevel: str = "INFO",
    app_path: str = "bench.orchestration:app",
) -> Iterator[list[subprocess.Popen]]:
    """`processes` worker processes (`celery -A app_path worker`), each ready once it logs `ready.`."""
    from ops.stack import wait_until

    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    errs: list[Any] = []
    try:
        for i in range(processes):
            log = log_dir / f"worker-{pool}-{i}-{time.monotonic_ns()}.log"
            logs.append(log)
            cmd = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app_path,
                "worker",
                f"--queues={queues}",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                f"--loglevel={loglevel}",
                f"--hostname=bench{i}-{os.getpid()}@%h",
                f"--logfile={log}",
            ]
            errs.append(open(log.with_suffix(".err"), "wb"))  # noqa: SIM115 (closed below)
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=REPO,
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=errs[-1],
                    start_new_session=True,  # its own process group: the pool children go with it
                )
            )
        for proc, log in zip(procs, logs, strict=True):
            wait_until(
                lambda p=proc, lg=log: p.poll() is not None or (lg.exists() and b"ready." in lg.read_bytes()),
                90,
                "celery worker",
            )
            if proc.poll() is not None:
                err = log.with_suffix(".err").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{err}")
        yield procs
    finally:
        _stop_groups(procs)
        for f in errs:
            f.close()


def _stop_groups(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM each worker's process group, SIGKILL what is left after 30 s; Ctrl-C cannot cut it short
    (an orphaned worker would retry a stopped broker forever)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for proc in procs:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers: the parent or its pool children
            proc.wait(10)
    finally:
        signal.signal(signal.SIGINT, previous)


def _proc_entries() -> list[Path]:
    """/proc's entries; none where there is no /proc (macOS): CPU figures then read 0."""
    try:
        return list(Path("/proc").iterdir())
    except OSError:
        return []


def children_of(pid: int) -> list[int]:
    """Direct child pids (prefork pool processes), from /proc."""
    out = []
    for entry in _proc_entries():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pids(url: str) -> list[int]:
    """The redis-server process serving `url` (found by its port on the command line)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = []
    for entry in _proc_entries():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and b"redis-server" in cmd[0] and port.encode() in b" ".join(cmd):
                out.append(int(entry.name))
    return out


def cpu_calibration() -> float:
    """Seconds of a fixed pure-Python + sha256 workload: how fast this machine's CPU is right now.

    Shared VMs vary (the same run has been seen 40% slower); compare figures only at similar values.
    """
    import hashlib

    started = time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i * i
    hashlib.sha256(b"x" * 30_000_000).digest()
    return time.process_time() - started


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:  # no /proc: the other-load figure reads 0
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def postmaster_reaped_seconds() -> float:
    """CPU of exited Postgres backends, as the postmaster's reaped-children time (cutime + cstime).

    Backends that connected and left during a run (pool overflow connections) are counted here;
    exited backends of other users of the server too.
    """
    for entry in _proc_entries():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent = Path(f"/proc/{fields[1]}/comm").read_text().strip()
        except OSError:
            continue
        if parent != "postgres":
            return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def postgres_sessions() -> int:
    """Connections ever opened to this run's database (pg_stat_database.sessions, Postgres >= 14)."""
    import sqlalchemy as sa

    from tasks.runtime import get_db

    try:
        with get_db().connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
                ).scalar()
                or 0
            )
    except sa.exc.ProgrammingError:  # Postgres before 14 has no sessions column
        return 0


def postgres_backends() -> dict[int, float]:
    """CPU seconds so far of the Postgres backends connected to this run's database, by pid.

    The server is shared with whatever else runs on the machine; only our database's backends count.
    """
    import sqlalchemy as sa

    from tasks.runtime import get_db

    with get_db().connect() as conn:
        pids = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return {int(pid): cpu_seconds(int(pid)) for pid in pids}


# -- data -------------------------------------------------------------------------------------------


def _png(args: tuple[int, str, int]) -> bytes:
    i, kind, size = args
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(10_000 + i)
    if kind == "noise":  # smooth noise: ~460 KB at 512x512, like a real generated PNG
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    else:
        from workers.drawing import ATTRIBUTES, DrawParams, draw_image

        img = draw_image(DrawParams(**{a: float(rng.random()) for a in ATTRIBUTES}, seed=i), size=size)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upload_images(
    stack: Stack, n: int, kind: str, size: int = 512, store: str = "s3"
) -> tuple[list[str], int]:
    """n distinct PNGs in the bucket (or under the image root, `store="file"`); URIs and total bytes."""
    from pigreward.progress import bar

    s3 = stack.s3()
    root = Path(stack.env["PIGREWARD_IMAGE_ROOT"])
    (root / "img").mkdir(parents=True, exist_ok=True)

    def put(i: int, data: bytes) -> None:
        if store == "file":
            (root / "img" / f"{i:05d}.png").write_bytes(data)
        else:
            s3.put_object(Bucket=BUCKET, Key=f"img/{i:05d}.png", Body=data)

    prefix = "file://img" if store == "file" else f"s3://{BUCKET}/img"
    uris: list[str] = [f"{prefix}/{i:05d}.png" for i in range(n)]
    total = 0
    with (
        mp.get_context("spawn").Pool(max(1, os.cpu_count() or 1)) as pool,
        ThreadPoolExecutor(4) as uploader,
        bar(n, f"drawing+uploading {n} {size}x{size} PNGs", unit="img") as pbar,
    ):
        futures = []
        for i, data in enumerate(pool.imap(_png, [(i, kind, size) for i in range(n)], chunksize=8)):
            total += len(data)
            futures.append(uploader.submit(put, i, data))
            pbar.update(1)
        for f in futures:
            f.result()
    return uris, total


def create_users(uris: Sequence[str], n_users: int, seed: int = 0) -> list[str]:
    """Users with 5-15 reference pairs each, drawn from the uploaded images."""
    from models.db import session_scope
    from models.references import add_reference
    from models.tenants import ensure_tenant
    from models.users import ensure_user
    from pigreward.synthetic import PROMPTS
    from tasks.runtime import get_db

    rng = random.Random(seed)
    names = [f"user{u:03d}" for u in range(n_users)]
    with session_scope(get_db()) as session:
        tenant = ensure_tenant(session=session, name="default")
        for name in names:
            user = ensure_user(session=session, tenant_id=tenant.id, external_id=name)  # type: ignore[arg-type]
            for r in range(rng.randint(5, 15)):
                chosen, rejected = rng.sample(list(uris), 2)
                add_reference(
                    session=session,
                    user_id=user.id,  # type: ignore[arg-type]
                    prompt=PROMPTS[r % len(PROMPTS)],
                    chosen_uri=chosen,
                    rejected_uri=rejected,
                )
    return names


def bootstrap_contexts(users: Sequence[str], backend: str, timeout_s: float = 300) -> None:
    """Build every user's context through the queue (the product path) before timing."""
    from tasks import bootstrap_context

    results = [bootstrap_context.apply_async(args=(u,), kwargs={"backend": backend}) for u in users]
    bad = [r.get(timeout=timeout_s) for r in results]
    bad = [b for b in bad if b.get("status") != "ready"]
    if bad:
        raise RuntimeError(f"context bootstrap failed: {bad[:3]}")


def judgment_specs(
    users: Sequence[str],
    uris: Sequence[str],
    n: int,
    tag: str,
    backend: str,
    seed: int = 1,
    swap: bool = False,
) -> list[Any]:
    from models.judgments import JudgmentSpec
    from pigreward.synthetic import PROMPTS

    rng = random.Random(seed)
    specs = []
    for i in range(n):
        a, b = rng.sample(range(len(uris)), 2)
        specs.append(
            JudgmentSpec(
                tenant="default",
                user=users[i % len(users)],
                prompt=f"{PROMPTS[i % len(PROMPTS)]} [{tag} {i}]",
                image_a=uris[a],
                image_b=uris[b],
                backend=backend,
                options={"swap": swap},
            )
        )
    return specs


# -- measurements -----------------------------------------------------------------------------------


def _parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _wait_drained(broker: Any, queue: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while broker.llen(queue) or broker.hlen("unacked"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {queue} not drained after {timeout_s} s")
        time.sleep(0.05)


def _done_times(results: Any, ids: Sequence[str]) -> list[datetime]:
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
    # drain
    queue = f"bench-noop-{os.getpid()}"
    ids = [noop.apply_async(queue=queue).id for _ in range(n)]
    mine = [*pids, *redis_pids(stack.redis_url), os.getpid()]
    cpu0, busy0 = sum(map(cpu_seconds, mine)), machine_busy_seconds()
    t0 = datetime.now(UTC)
    replies = app.control.add_consumer(queue, reply=True, timeout=5)
    _wait_drained(broker, queue)
    wall = (max(_done_times(results, ids)) - t0).total_seconds()
    busy, cpu = machine_busy_seconds() - busy0, sum(map(cpu_seconds, mine)) - cpu0
    app.control.cancel_consumer(queue, reply=True, timeout=5)
    out.update(drain_rate=n / wall, drain_s=wall, consumers=len(replies))
    out.update(cpu_ms=1e3 * cpu / n, foreign_cores=max(0.0, busy - cpu) / wall)
    # send while consuming
    t0 = datetime.now(UTC)
    p0 = time.perf_counter()
    ids = [noop.apply_async(queue=NOOP_QUEUE).id for _ in range(n)]
    sent_s = time.perf_counter() - p0
    _wait_drained(broker, NOOP_QUEUE)
    wall = (max(_done_times(results, ids)) - t0).total_seconds()
    out.update(send_rate=n / wall, send_s=wall, client_send_rate=n / sent_s)
    out["rate"] = out["drain_rate"]
    return out


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


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def ledger_stats(first_id: int, last_id: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    import sqlalchemy as sa

    from tasks.runtime import get_db

    with get_db().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT status, created_at, started_at, finished_at, timings FROM judgment "
                "WHERE id BETWEEN :a AND :b"
            ),
            {"a": first_id, "b": last_id},
        ).mappings()
        rows = [dict(r) for r in rows]
    return rows, dict(Counter(r["status"] for r in rows))


def wait_terminal(first_id: int, last_id: int, n: int, timeout_s: float) -> None:
    import sqlalchemy as sa

    from pigreward.progress import bar
    from tasks.runtime import get_db

    engine = get_db()
    deadline = time.monotonic() + timeout_s
    query = sa.text(
        "SELECT count(*) FROM judgment WHERE id BETWEEN :a AND :b AND status IN :terminal"
    ).bindparams(sa.bindparam("terminal", expanding=True))
    with bar(n, "judging", unit="judgment") as pbar:
        while True:
            with engine.connect() as conn:
                finished = conn.execute(
                    query, {"a": first_id, "b": last_id, "terminal": list(TERMINAL)}
                ).scalar()
            pbar.update(int(finished or 0) - pbar.n)
            if finished >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n - finished} of {n} judgments unfinished after {timeout_s}s")
            time.sleep(0.5)


def run_judgments(
    specs: Sequence[Any],
    chunk: int,
    label: str,
    pids: Sequence[int],
    stack: Stack,
    profile_s: float = 0,
) -> tuple[JudgeRun, str | None]:
    from tasks import submit_judgments

    moto_pid = stack.moto_pid
    watched = {
        "workers": list(pids),
        "moto": [moto_pid],
        "redis": redis_pids(stack.redis_url),
        "bench (submit+poll)": [os.getpid()],
    }
    cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    pg0, reaped0, sessions0 = postgres_backends(), postmaster_reaped_seconds(), postgres_sessions()
    busy0 = machine_busy_seconds()
    t0 = datetime.now(UTC)
    p0 = time.perf_counter()
    ids = submit_judgments(specs, chunk_size=chunk)
    submit_s = time.perf_counter() - p0
    profiler = start_profile(list(pids) + [moto_pid], profile_s, stack.tmp) if profile_s else None
    try:
        wait_terminal(min(ids), max(ids), len(set(ids)), timeout_s=3600)
    except BaseException:
        for _, proc, _ in profiler.procs if profiler else []:
            proc.kill()
        raise
    cpu = {k: sum(cpu_seconds(p) for p in v) - cpu0[k] for k, v in watched.items()}
    cpu["postgres"] = sum(v - pg0.get(pid, 0.0) for pid, v in postgres_backends().items())
    cpu["postgres"] += postmaster_reaped_seconds() - reaped0
    sessions = postgres_sessions() - sessions0
    machine_busy = machine_busy_seconds() - busy0
    profile_text = finish_profile(profiler) if profiler else None
    rows, statuses = ledger_stats(min(ids), max(ids))
    last = max(r["finished_at"] for r in rows)
    first_start = min(r["started_at"] for r in rows if r["started_at"])
    stages: dict[str, list[float]] = {
        "queue wait (started - created)": [],
        "context lookup (context_s)": [],
        "image fetch+normalize (images_s)": [],
        "backend (backend_s)": [],
        "claim + image rows + persist (rest)": [],
        "run total (finished - started)": [],
    }
    for r in rows:
        t = r["timings"] or {}
        run = (r["finished_at"] - r["started_at"]).total_seconds()
        parts = [t.get("context_s", 0.0), t.get("images_s", 0.0), t.get("backend_s", 0.0)]
        values = [(r["started_at"] - r["created_at"]).total_seconds(), *parts, run - sum(parts), run]
        for key, value in zip(stages, values, strict=True):
            stages[key].append(value)
    summary = {
        k: {"mean": 1e3 * statistics.fmean(v), "p50": 1e3 * _q(v, 0.5), "p95": 1e3 * _q(v, 0.95)}
        for k, v in stages.items()
    }
    result = JudgeRun(
        label=label,
        n=len(rows),
        submit_s=submit_s,
        wall_s=(last - t0).total_seconds(),
        worker_wall_s=(last - first_start).total_seconds(),
        statuses=statuses,
        stages=summary,
        cpu=cpu,
        machine_busy_s=machine_busy,
        db_sessions=sessions,
    )
    return result, profile_text


# -- profiling (py-spy) -----------------------------------------------------------------------------


@dataclass
class Profiler:
    procs: list[tuple[int, subprocess.Popen, Path]]


def start_profile(pids: Sequence[int], seconds: float, folder: Path) -> Profiler | None:
    binary = shutil.which("py-spy")
    if binary is None:
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    out = []
    for target in dict.fromkeys(pids):
        path = folder / f"pyspy-{target}-{time.monotonic_ns()}.txt"  # removed with the run's folder
        cmd = [binary, "record", "--pid", str(target), "--duration", str(int(seconds)), "--rate", "200"]
        # --gil: only the thread holding the GIL is sampled, i.e. where Python CPU goes
        cmd += ["--format", "raw", "--output", str(path), "--nonblocking", "--gil"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((target, proc, path))
    return Profiler(out)


_STAGES = (  # frame substring -> stage; the match nearest the leaf wins
    ("_read_s3 (", "S3 GET (boto3 client)"),
    ("normalize (workers/imaging.py", "image decode+normalize"),
    ("load (workers/imaging.py", "image load (sha256, cache)"),
    ("do_ping (", "DB: pool pre-ping"),
    ("claim_judgment (", "DB: claim"),
    ("ensure_context (", "DB: context lookup"),
    ("_image_ids (", "DB: image rows"),
    ("finish_judgment (", "DB: verdict write"),
    ("session_scope (", "DB: BEGIN/COMMIT"),
    ("_report (", "metrics observer"),
    ("judge_pair (", "backend"),
    ("run_judgment (", "pipeline (other)"),
    ("record_judgments (", "DB: ledger insert (submit)"),
)
_LIBRARIES = (  # for stacks outside the stages above
    ("moto/", "moto S3 server"),
    ("werkzeug/", "moto S3 server"),
    ("flask/", "moto S3 server"),
    ("psycopg", "DB: other"),
    ("sqlalchemy/", "DB: other"),
    ("kombu/", "Celery/kombu/redis messaging"),
    ("celery/", "Celery/kombu/redis messaging"),
    ("billiard/", "Celery/kombu/redis messaging"),
    ("redis/", "Celery/kombu/redis messaging"),
)


def _stage_of(frames: Sequence[str]) -> str:
    for markers in (_STAGES, _LIBRARIES):
        for f in reversed(frames):
            hit = next((stage for m, stage in markers if m in f), None)
            if hit:
                return hit
    return "other"


def finish_profile(profiler: Profiler) -> str:
    """Top self-time functions and a time split by stage, per process, from py-spy's raw stacks."""
    lines = []
    for pid, proc, path in profiler.procs:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        leaf: Counter[str] = Counter()
        stage: Counter[str] = Counter()
        total = 0
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            leaf[frames[-1]] += n
            stage[_stage_of(frames)] += n
        path.unlink(missing_ok=True)
        if not total:
            lines.append(f"  pid {pid}: no samples (py-spy needs ptrace rights)")
            continue
        lines.append(f"  pid {pid}: {total} busy samples")
        lines.append(
            "    by stage: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in stage.most_common(8))
        )
        for name, n in leaf.most_common(6):
            lines.append(f"    {100 * n / total:5.1f}%  {name[:120]}")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------


def _fmt_stage(run: JudgeRun) -> list[str]:
    """Per-stage wall time, and each stage's share of the workers' time spent running judgments."""
    total = run.stages["run total (finished - started)"]["mean"]
    out = [f"    {'stage':38s} {'mean ms':>9s} {'p50 ms':>9s} {'p95 ms':>9s} {'share':>7s}"]
    for k, v in run.stages.items():
        share = "" if k.startswith("queue wait") else f"{100 * v['mean'] / total:6.1f}%"
        out.append(f"    {k:38s} {v['mean']:9.2f} {v['p50']:9.2f} {v['p95']:9.2f} {share:>7s}")
    return out


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


def main(argv: Sequence[str] | None = None) -> int:
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
        help="s3: images from moto S3 (the benchmark); file: file:// under the image root (no S3 cost)",
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
    p.add_argument("--profile", type=float, default=0, help="py-spy the workers and moto for S seconds")
    p.add_argument(
        "--uri-ttl",
        type=float,
        default=0.0,
        help="PIGREWARD_IMAGE_URI_TTL_S of the workers (0, the default: every load reads S3)",
    )
    args = p.parse_args(argv)
    pools = [x.strip() for x in args.pools.split(",") if x.strip()]

    env_extra = {
        "PIGREWARD_CHUNK_CONCURRENCY": str(args.chunk_concurrency),
        "PIGREWARD_BACKEND": "null",
        "PIGREWARD_IMAGE_URI_TTL_S": str(args.uri_ttl),
    }
    report: list[tuple[str, dict[str, float], JudgeRun, str | None]] = []
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
            pool, processes, concurrency, chunk_conc = parse_pool(spec, args)
            label = (
                f"prefork: 1 worker x {concurrency} pool processes, chunk_concurrency {chunk_conc}"
                if pool == "prefork"
                else f"threads: {processes} worker processes x {concurrency} threads, chunk_concurrency {chunk_conc}"
            )
            with worker_processes(
                {**stack.env, "PIGREWARD_CHUNK_CONCURRENCY": str(chunk_conc)},
                pool=pool,
                processes=processes,
                concurrency=concurrency,
                queues="context,judge,bulk",
                log_dir=stack.tmp,
                loglevel=args.loglevel,
            ) as procs:
                pids = [p.pid for p in procs]
                pids += [c for pid in pids for c in children_of(pid)]
                if k == 0:
                    bootstrap_contexts(users, "null")
                print(f"[{label}] no-op reference: {args.noop} tasks ...", file=sys.stderr)
                ref = noop_rate(stack, args.noop, pids)
                specs = judgment_specs(users, uris, args.judgments, tag=f"run{k}", backend="null", seed=1 + k)
                run, prof = run_judgments(specs, args.chunk, label, pids, stack, profile_s=args.profile)
            report.append((label, ref, run, prof))
            calibration.append(cpu_calibration())

    best = max(report, key=lambda r: r[2].rate)
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
        + ("from moto S3 (own process)" if args.store == "s3" else "as file:// under the image root")
    )
    for label, ref, run, prof in report:
        print()
        print(f"[{label}]")
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
            + (
                " (pool overflow churn: more concurrent sessions than pool_size)"
                if run.db_sessions > 100
                else ""
            )
        )
        print(f"  ratio to no-op: {run.rate / ref['rate']:.3f}")
        cpu_total = sum(run.cpu.values())
        print(
            "  CPU seconds during the run: "
            + ", ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
            + f" (total {cpu_total:.1f} = {1e3 * cpu_total / run.n:.2f} ms CPU per judgment; "
            f"{cpu_total / run.wall_s:.2f} of {os.cpu_count()} cores busy)"
        )
        print(
            f"  machine load from other processes during the run: {run.foreign_cores:.2f} cores"
            + (" (WARNING: the machine was shared; figures are low)" if run.foreign_cores > 0.2 else "")
        )
        print(
            "  CPU ms per judgment: "
            + ", ".join(f"{k} {1e3 * v / run.n:.2f}" for k, v in run.cpu.items())
            + f"; CPU-bound ceiling on {os.cpu_count()} cores: {run.n * (os.cpu_count() or 1) / cpu_total:.0f} "
            "judgments/s"
        )
        print("  time per judgment by stage (from the ledger's timestamps and timings):")
        print("\n".join(_fmt_stage(run)))
        print(
            f"  broker: submitting cost {1e3 * run.submit_s / run.n:.2f} ms per judgment in the client "
            f"(ledger rows + {-(-run.n // args.chunk)} judge_chunk messages), Redis "
            f"{1e3 * run.cpu.get('redis', 0.0) / run.n:.3f} ms CPU per judgment, a worker "
            f"{ref['cpu_ms'] / args.chunk:.3f} ms CPU per judgment for message handling (no-op CPU per "
            f"task / chunk); the queue wait is backlog (all judgments are submitted at once), not broker latency"
        )
        if prof:
            print(f"  py-spy ({args.profile:.0f} s, 200 Hz, GIL-holding thread only = Python CPU):")
            print(prof)
    label, ref, run, _ = best
    print()
    print("== summary ==")
    print(
        f"SUMMARY nproc={os.cpu_count()} best={label}; other load on the machine during that run "
        f"{run.foreign_cores:.2f} cores; CPU calibration {max(calibration):.3f} s"
    )
    print(
        f"SUMMARY end-to-end {run.rate:.1f} judgments/s (goal >= 200: {'MET' if run.rate >= 200 else 'NOT MET'})"
    )
    print(
        f"SUMMARY no-op reference {ref['rate']:.0f} tasks/s (other load {ref['foreign_cores']:.2f} cores"
        + ("; under 2,000 tasks: a rough figure" if ref["n"] < 2000 else "")
        + f"); ratio {run.rate / ref['rate']:.3f} "
        f"(goal >= 0.25: {'MET' if run.rate / ref['rate'] >= 0.25 else 'NOT MET'})"
    )
    print(
        "SUMMARY CPU ms per judgment: "
        + ", ".join(f"{k} {1e3 * v / run.n:.2f}" for k, v in run.cpu.items())
        + f" = {1e3 * sum(run.cpu.values()) / run.n:.2f} (200 judgments/s on {os.cpu_count()} cores needs "
        f"<= {1e3 * (os.cpu_count() or 1) / 200:.0f})"
    )
    for lbl, r, jr, _ in report:
        print(
            f"SUMMARY {lbl}: {jr.rate:.1f} judgments/s, no-op {r['rate']:.0f}/s, ratio {jr.rate / r['rate']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
