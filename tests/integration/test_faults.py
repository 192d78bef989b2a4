"""The fault suite, small: real worker processes through kills, outages, broker loss and a misbehaving
LVLM, on both supported brokers, end with every judgment finished once.

`pigreward bench faults` at test size (100 judgments a scenario, recovery at test speed with
`--fast`); the full run with the shipped settings is what README quotes. What is asserted comes from
the ledger the bench reads: nothing lost, duplicated, stuck or `failed`, and no traceback logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.stack import REPO

pytestmark = pytest.mark.slow

SCENARIOS = {
    "redis": "kill_main,kill_child,broker_restart,db_down_10,s3_down_15,lvlm_faults,double_submit",
    "rabbitmq": "kill_main,kill_child,broker_restart,db_down_10,s3_down_15",
}


@pytest.mark.parametrize("broker", sorted(SCENARIOS))
def test_every_judgment_ends_once_through_each_fault(broker: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pigreward.cli", "bench", "faults", "--brokers", broker]
        + ["--scenarios", SCENARIOS[broker], "--judgments", "100", "--fast", "--lvlm-seconds", "10"]
        + ["--logs", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    report = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}\n{_first_traceback(tmp_path)}"
    assert proc.returncode == 0, report
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] == [broker]]
    assert [row[1] for row in rows] == SCENARIOS[broker].split(","), report
    header = proc.stdout.splitlines()[0].split()
    for row in rows:
        cell = dict(zip(header, row, strict=True))
        assert int(cell["n"]) == 100
        assert int(cell["done"]) + int(cell["invalid"]) + int(cell["rejected"]) == 100, report
        for column in ("failed", "lost", "dup", "stuck", "tracebacks"):
            assert cell[column] == "0", f"{row[1]}: {column} = {cell[column]}\n{report}"
    lvlm = [row for row in rows if row[1] == "lvlm_faults"]
    if lvlm:  # garbage and loops are invalid verdicts, not retried into done
        assert int(dict(zip(header, lvlm[0], strict=True))["invalid"]) > 0, report
    assert "SUMMARY all scenarios: 0 lost, 0 duplicated, 0 stuck, 0 failed" in proc.stdout, report


def _first_traceback(logs: Path) -> str:
    """The first traceback the workers logged, whole, so a failure says where it came from."""
    for log in sorted(logs.rglob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for n, line in enumerate(lines):
            if line.startswith("Traceback"):
                return f"first traceback in {log.name}:\n" + "\n".join(lines[max(0, n - 2) : n + 60])
    return "no traceback in the workers' logs"
