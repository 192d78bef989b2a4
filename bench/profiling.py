"""py-spy over the worker processes during a run, summed into pipeline stages.

A flat profile of a Celery worker is mostly library frames; what the benchmark needs is which stage
of a judgment (S3 GET, decode, each ledger write, messaging) the Python CPU went to. Only the thread
holding the GIL is sampled (`--gil`), so the split is of Python CPU, not of wall time. The S3 server
(SeaweedFS, a Go binary) is not sampled: its CPU is reported apart by `bench.accounting`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_STAGES = (  # frame substring -> stage; the match nearest the leaf wins
    ("DirectGets.get (", "S3 GET (direct)"),
    ("_get_s3 (", "S3 GET (boto3 client)"),
    ("normalize (workers/imaging.py", "image decode+normalize"),
    ("get (workers/decoded.py", "decoded folder: read"),
    ("put (workers/decoded.py", "decoded folder: write"),
    ("trim (workers/decoded.py", "decoded folder: trim"),
    ("load (workers/imaging.py", "image load (sha256, cache)"),
    ("do_ping (", "DB: pool pre-ping"),
    ("claim_judgment (", "DB: claim"),
    ("chunk_contexts (", "DB: context lookup (per chunk)"),
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
    ("psycopg", "DB: other"),
    ("sqlalchemy/", "DB: other"),
    ("kombu/", "Celery/kombu/redis messaging"),
    ("celery/", "Celery/kombu/redis messaging"),
    ("billiard/", "Celery/kombu/redis messaging"),
    ("redis/", "Celery/kombu/redis messaging"),
)


@dataclass
class Profiler:
    """One `py-spy record` per target: (target pid, py-spy process, its raw output file)."""

    procs: list[tuple[int, subprocess.Popen[bytes], Path]]

    def kill(self) -> None:
        for _, proc, _ in self.procs:
            proc.kill()


def start_profile(pids: Sequence[int], seconds: float, folder: Path) -> Profiler | None:
    """py-spy each distinct pid for `seconds`; None (with a note) where py-spy is not installed."""
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


def _stage_of(frames: Sequence[str]) -> str:
    for markers in (_STAGES, _LIBRARIES):
        for f in reversed(frames):
            hit = next((stage for m, stage in markers if m in f), None)
            if hit:
                return hit
    return "other"


def _read_samples(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """From py-spy's raw output (`frame;frame;... count` per line): samples by leaf function, by
    stage, and in all."""
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
    return leaf, stage, total


def _describe(pid: int, leaf: Counter[str], stage: Counter[str], total: int) -> list[str]:
    if not total:
        return [f"  pid {pid}: no samples (py-spy needs ptrace rights)"]
    lines = [f"  pid {pid}: {total} busy samples"]
    lines.append("    by stage: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in stage.most_common(8)))
    for name, n in leaf.most_common(6):
        lines.append(f"    {100 * n / total:5.1f}%  {name[:120]}")
    return lines


def finish_profile(profiler: Profiler) -> str:
    """Top self-time functions and a time split by stage, per process, from py-spy's raw stacks."""
    lines = []
    for pid, proc, path in profiler.procs:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        leaf, stage, total = _read_samples(path)
        path.unlink(missing_ok=True)
        lines += _describe(pid, leaf, stage, total)
    return "\n".join(lines)
