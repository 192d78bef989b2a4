"""The throughput benchmarks run end to end at a small size and print their figures.

Figures are not asserted (speed targets live in the benchmarks, not in timed tests); what is
asserted is that each benchmark still drives the real stack to completion and reports.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ops.stack import REPO

pytestmark = pytest.mark.slow  # three benchmarks end to end, each on its own private stack


def _bench(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pigreward.cli", "bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_orchestration_bench_judges_every_pair_and_reports_the_stage_split() -> None:
    out = _bench(
        "orchestration",
        "--judgments",
        "150",
        "--images",
        "30",
        "--users",
        "4",
        "--noop",
        "200",
        "--chunk",
        "25",
    )
    assert "statuses: {'done': 150}" in out
    for stage in ("context lookup", "image fetch+normalize", "backend", "persist", "queue wait"):
        assert stage in out
    rate = float(re.search(r"SUMMARY end-to-end ([\d.]+) judgments/s", out).group(1))  # type: ignore[union-attr]
    noop = float(re.search(r"SUMMARY no-op reference (\d+) tasks/s", out).group(1))  # type: ignore[union-attr]
    ratio = float(re.search(r"\); ratio ([\d.]+) ", out).group(1))  # type: ignore[union-attr]
    assert rate > 0 and noop > 0
    assert abs(ratio - rate / noop) < 0.01


def test_feeding_bench_counts_what_the_server_saw() -> None:
    out = _bench("feeding", "--judgments", "64", "--delay", "0.3", "--setups", "2x32@16/16", "--images", "20")
    assert "statuses: {'done': 64}; server requests during the run: 64" in out
    max_in_flight = int(re.search(r"server in flight: max (\d+)", out).group(1))  # type: ignore[union-attr]
    assert 1 <= max_in_flight <= 16  # never more than max_in_flight per worker process
    assert "SUMMARY 2x32@16/16:" in out


def test_request_shape_bench_reports_prefix_and_image_tokens() -> None:
    out = _bench("request-shape", "--users", "2", "--judgments", "3")
    shares = [
        float(x) for x in re.findall(r"shared prefix per user \(text, data URLs removed\) min ([\d.]+)%", out)
    ]
    assert len(shares) == 2 and all(0 < s <= 100 for s in shares)
    assert "256 per image (512x512 source -> 448x448)" in out
