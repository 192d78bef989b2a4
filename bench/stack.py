"""The private stack a throughput benchmark runs on: Redis, a fresh Postgres database, a SeaweedFS S3
server, and worker processes in their own process groups.

Built on the launchers of `ops.stack`. SeaweedFS (`weed server`, one Go process in its own process
group) stands in for the S3 service, which is another host in production: its pid is found so that
its CPU is reported apart from the workers'. Workers get a process group each so that stopping one
also stops its prefork pool children (an orphaned worker retries a stopped broker forever).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.accounting import s3_server_pids
from ops.stack import (
    REPO,
    configured,
    postgres_database,
    redis_server,
    s3_client,
    seaweed_s3,
    stack_env,
    wait_until,
)

BUCKET = "pigreward-bench"


@dataclass
class Stack:
    """A running private stack: its PIGREWARD_* environment, service addresses and scratch folder."""

    env: dict[str, str]
    database_url: str
    redis_url: str
    s3_endpoint: str
    s3_pids: list[int]  # the SeaweedFS server's processes (CPU reported apart from the workers')
    tmp: Path

    def s3(self) -> Any:
        """A boto3 S3 client for the stack's SeaweedFS server."""
        return s3_client(self.s3_endpoint)


@contextmanager
def real_stack(extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Redis + a fresh Postgres database + SeaweedFS S3 (own process group), configured into this process."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pigreward-bench-")))
        redis_url = stack.enter_context(redis_server(tmp))
        database_url = stack.enter_context(postgres_database())
        s3_endpoint = stack.enter_context(seaweed_s3(tmp))
        s3_pids = s3_server_pids(s3_endpoint)
        if not s3_pids:
            raise RuntimeError(f"no `weed` process serves {s3_endpoint}: its CPU could not be counted")
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
        st = Stack(env, database_url, redis_url, s3_endpoint, s3_pids, tmp)
        st.s3().create_bucket(Bucket=BUCKET)
        yield st


def _worker_command(
    app_path: str, i: int, *, queues: str, pool: str, concurrency: int, loglevel: str, log: Path
) -> list[str]:
    return [
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


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker logs `ready.`; its stderr in the error if it exits first."""
    wait_until(
        lambda: proc.poll() is not None or (log.exists() and b"ready." in log.read_bytes()),
        90,
        "celery worker",
    )
    if proc.poll() is not None:
        err = log.with_suffix(".err").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{err}")


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
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`processes` worker processes (`celery -A app_path worker`), each ready once it logs `ready.`."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    errs: list[IO[bytes]] = []
    try:
        for i in range(processes):
            log = log_dir / f"worker-{pool}-{i}-{time.monotonic_ns()}.log"
            logs.append(log)
            cmd = _worker_command(
                app_path, i, queues=queues, pool=pool, concurrency=concurrency, loglevel=loglevel, log=log
            )
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
            _wait_ready(proc, log)
        yield procs
    finally:
        stop_groups(procs)
        for f in errs:
            f.close()


def stop_groups(procs: Sequence[subprocess.Popen[bytes]]) -> None:
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
