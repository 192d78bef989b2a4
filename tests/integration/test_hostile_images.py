"""The hostile-image bench in small (issue 12, defect 4): distinct 7000x7000 PNGs through a real
worker process at high concurrency stay under the documented RSS budget, and every row ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ops.stack import REPO

pytestmark = pytest.mark.slow


def test_hostile_pngs_stay_under_the_decode_budget() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.hostile_images", "--images", "10", "--concurrency", "16"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "SUMMARY OK" in proc.stdout and "(0 lost)" in proc.stdout, report
