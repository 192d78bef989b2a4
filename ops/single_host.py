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
    ready: Callable[[Path], bool]  # given its log file
    url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    _out: IO[bytes] | None = field(default=None, repr=False)


WORKER_QUEUES = ("context,judge", "optimize", "bulk")
"""One worker per kind of work, so a long optimization or a night's bulk run never holds up
interactive judgments; together they consume every queue."""


def _logged(text: bytes) -> Callable[[Path], bool]:
    return lambda log: log.exists() and text in log.read_bytes()


def _http_ok(url: str) -> Callable[[Path], bool]:
    def check(_log: Path) -> bool:
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
            part.proc = subprocess.Popen(
                part.argv, stdout=part._out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ready_timeout_s
        for part in self.parts:
            assert part.proc is not None and part.log is not None
            while not part.ready(part.log):
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
        lines = part.log.read_text(errors="replace").strip().splitlines()[-5:]
        return f"last lines of {part.log}:\n    " + "\n    ".join(lines)

    def stop(self, timeout_s: float = 60.0) -> list[str]:
        """SIGTERM every part's process group (the API first, so no new work comes in), wait up to
        `timeout_s` in all, SIGKILL what is left; one summary line per part."""
        started = [p for p in reversed(self.parts) if p.proc is not None]
        for part in started:
            _signal_group(part, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        lines = []
        for part in started:
            assert part.proc is not None
            try:
                code = part.proc.wait(max(0.1, deadline - time.monotonic()))
                # uvicorn re-raises the SIGTERM it shut down on: a signal exit here is a clean stop
                how = f"exit {code}" if code >= 0 else f"stopped by {signal.Signals(-code).name}"
            except subprocess.TimeoutExpired:
                _signal_group(part, signal.SIGKILL)
                code = part.proc.wait(10)
                how = f"killed after {timeout_s:.0f}s"
            _signal_group(part, signal.SIGKILL)  # any pool child left behind by its parent
            if part._out is not None:
                part._out.close()
            lines.append(f"  stopped {part.name:<21} {how}")
        return lines


def _signal_group(part: Part, sig: signal.Signals) -> None:
    assert part.proc is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(part.proc.pid, sig)
