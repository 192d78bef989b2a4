"""A single-host deployment in one process tree: the API, workers for every queue, beat and Flower.

`pigreward up` builds the plan (`plan`) and runs it under `Supervisor`: each part is a child in its
own session (so a terminal's Ctrl-C reaches only the supervisor, which then stops the parts in order),
logs to its own file, and is ready when its check passes. Stopping sends SIGTERM to each part's process
group (workers finish what they hold: Celery's warm shutdown), waits, then SIGKILLs what is left, so no
pool child outlives the deployment. A part that dies on its own stops the rest: a deployment missing
a queue's workers would leave work waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel, Field


class Deployment(BaseModel):
    """What `pigreward up` starts, from its options."""

    host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    flower_port: int = Field(5555, ge=1, le=65535)
    flower: bool = True
    flower_auth: bool = Field(False, description="PIGREWARD_FLOWER_USER and _PASSWORD are set")
    beat: bool = True
    concurrency: int | None = Field(None, ge=1, description="threads per worker (default: settings)")
    logs: Path
    beat_schedule: Path


@dataclass
class Part:
    """One child process of the deployment."""

    name: str
    argv: list[str]
    ready: Callable[[bytes], bool]  # given what its log gained since it started
    url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    log_start: int = 0  # the log's size when this run started: older lines say nothing about it
    _out: IO[bytes] | None = field(default=None, repr=False)

    def new_log(self) -> bytes:
        if self.log is None or not self.log.exists():
            return b""
        with self.log.open("rb") as fh:
            fh.seek(self.log_start)
            return fh.read()


WORKER_QUEUES = ("context,judge", "optimize", "bulk")
"""One worker per kind of work, so a long optimization or a night's bulk run never holds up
interactive judgments; together they consume every queue."""


def _logged(text: bytes) -> Callable[[bytes], bool]:
    return lambda new: text in new


def _http_ok(url: str) -> Callable[[bytes], bool]:
    def check(_new: bytes) -> bool:
        import httpx

        try:
            return httpx.get(url, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def plan(d: Deployment) -> list[Part]:
    """The parts in start order: workers first (so nothing the API accepts waits), beat, Flower, API."""
    cli = [sys.executable, "-m", "pigreward.cli"]
    parts = []
    for queues in WORKER_QUEUES:
        argv = [*cli, "worker", "-Q", queues]
        if d.concurrency:
            argv += ["-c", str(d.concurrency)]
        parts.append(Part(f"worker {queues}", argv, _logged(b"ready.")))
    if d.beat:
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "beat", f"--schedule={d.beat_schedule}"]
        parts.append(Part("beat", [*argv, "--loglevel=INFO"], _logged(b"beat: Starting")))
    if d.flower:
        url = f"http://{d.host}:{d.flower_port}"
        argv = [*cli, "flower", "--port", str(d.flower_port), "--address", d.host]
        if not d.flower_auth:  # `pigreward flower` itself refuses that off loopback
            argv.append("--no-auth")
        parts.append(Part("flower", argv, _http_ok(f"{url}/healthcheck"), url))
    url = f"http://{d.host}:{d.api_port}"
    argv = [*cli, "api", "--host", d.host, "--port", str(d.api_port)]
    parts.append(Part("api", argv, _http_ok(f"{url}/healthz"), url))
    return parts


class PartFailed(RuntimeError):
    """A part exited on its own (or never became ready)."""


class Supervisor:
    """Starts parts, waits until each is ready, watches them, and stops them all."""

    def __init__(self, parts: Sequence[Part], logs: Path, say: Callable[[str], None]) -> None:
        self.parts, self.logs, self.say = list(parts), logs, say

    def start(self, ready_timeout_s: float = 120.0) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for part in self.parts:
            part.log = self.logs / f"{part.name.replace(' ', '-').replace(',', '-')}.log"
            part._out = part.log.open("ab")
            part.log_start = part._out.tell()
            part.proc = subprocess.Popen(
                part.argv,
                stdout=part._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + ready_timeout_s
        for part in self.parts:
            assert part.proc is not None and part.log is not None
            while not part.ready(part.new_log()):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise PartFailed(
                        f"{part.name} not ready after {ready_timeout_s:.0f}s; {self._tail(part)}"
                    )
                time.sleep(0.2)
            where = f" at {part.url}" if part.url else ""
            self.say(f"  ready  {part.name:<22} pid {part.proc.pid}{where}  (log {part.log})")

    def watch(self, poll_s: float = 0.5) -> None:
        """Block until a part exits on its own (PartFailed) or a signal interrupts (KeyboardInterrupt)."""
        while True:
            self._check_alive()
            time.sleep(poll_s)

    def _check_alive(self) -> None:
        for part in self.parts:
            if part.proc is not None and part.proc.poll() is not None:
                raise PartFailed(f"{part.name} exited with {part.proc.returncode}; {self._tail(part)}")

    @staticmethod
    def _tail(part: Part) -> str:
        if part.log is None or not part.log.exists():
            return "no log"
        lines = part.new_log().decode(errors="replace").strip().splitlines()[-5:]
        return f"last lines of {part.log}:\n    " + "\n    ".join(lines)

    def stop(self, timeout_s: float = 60.0) -> list[str]:
        """Stop the API first (no new work comes in), then everything else at once (workers finish
        what they hold, Celery's warm shutdown); SIGKILL what is left after `timeout_s` in all, and
        any process left in a part's group. One summary line per part."""
        deadline = time.monotonic() + timeout_s
        started = [p for p in reversed(self.parts) if p.proc is not None]
        front = [p for p in started if p.name == "api"]
        lines = [self._stop(p, deadline) for p in front]
        rest = [p for p in started if p not in front]
        for part in rest:
            _signal_group(part, signal.SIGTERM)
        lines += [self._stop(p, deadline, signalled=True) for p in rest]
        return lines

    def _stop(self, part: Part, deadline: float, signalled: bool = False) -> str:
        assert part.proc is not None
        if not signalled:
            _signal_group(part, signal.SIGTERM)
        try:
            code = part.proc.wait(max(0.1, deadline - time.monotonic()))
            # uvicorn re-raises the SIGTERM it shut down on: a signal exit here is a clean stop
            how = f"exit {code}" if code >= 0 else f"stopped by {signal.Signals(-code).name}"
        except subprocess.TimeoutExpired:
            _signal_group(part, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                part.proc.wait(10)
            how = "killed (did not stop in time)"
        _signal_group(part, signal.SIGKILL)  # any pool child left behind by its parent
        if part._out is not None:
            part._out.close()
        return f"  stopped {part.name:<21} {how}"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies without stopping it (kill -9, a
    crash), so no part outlives `pigreward up` (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(part: Part, sig: signal.Signals) -> None:
    assert part.proc is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(part.proc.pid, sig)
