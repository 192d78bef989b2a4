"""Trust signals in the accuracy harness end to end: a small noisy synthetic set through the queue on
the embedded default, calibration measured from the ledger, and a calibration saved.

One run in its own process with a clean environment, as `tests/integration/test_bench_accuracy.py`
does (the session's `stack` fixture would point Celery at Redis in this one).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.stack import REPO

pytestmark = pytest.mark.slow  # one accuracy run through the queue, with context quality checks

USERS, TESTS, MIN_REFS, MAX_REFS = 6, 20, 8, 10
SCRIPT = """
import json, sys
from pathlib import Path
from sqlalchemy import text
from bench.accuracy.report import render_summary
from bench.accuracy.synthetic import run_synthetic
from core.settings import get_settings
from tasks.runtime import get_db

users, tests, lo, hi = (int(x) for x in sys.argv[1:5])
report = run_synthetic(
    get_settings(), Path(sys.argv[5]), users=users, tests_per_user=tests, min_refs=lo, max_refs=hi,
    progress=False, save_calibration=True,
)
with get_db().connect() as conn:
    calibrations = [dict(r._mapping) for r in conn.execute(text("select version, source, pairs from calibration"))]
print(json.dumps({"summary": render_summary(report), "calibrations": calibrations}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("bench-trust")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    env["PIGREWARD_DATA_DIR"] = str(tmp / "data")
    args = [str(x) for x in (USERS, TESTS, MIN_REFS, MAX_REFS, tmp / "out")]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    results = json.loads((tmp / "out" / "results.json").read_text())
    return printed, results, tmp / "out"


def test_the_calibration_section_is_measured_from_the_ledger(run) -> None:  # type: ignore[no-untyped-def]
    _, results, _ = run
    assert results["dataset"] == f"synthetic-u{USERS}-s0-noise0.45-refs{MIN_REFS}-{MAX_REFS}-tests{TESTS}"
    assert MIN_REFS <= results["references_min"] <= results["references_max"] <= MAX_REFS
    (cal,) = results["calibration"]  # lite only: the baselines get none
    assert cal["method"] == "lite" and cal["verdicts"] == USERS * TESTS
    assert cal["with_confidence"] + sum(cal["without_confidence"].values()) == USERS * TESTS
    assert cal["with_confidence"] >= 0.9 * USERS * TESTS
    assert cal["sources"] == {"bradley-terry": cal["with_confidence"]}
    assert cal["calibration_versions"] == {"uncalibrated": cal["with_confidence"]}  # none saved before
    for key in ("raw", "stored", "cross_fitted"):
        measure = cal[key]
        assert math.isfinite(measure["ece"]) and 0.0 <= measure["ece"] <= 1.0, key
        assert len(measure["reliability"]) == 10
        assert sum(b["count"] for b in measure["reliability"]) == cal["with_confidence"]
        assert [p["threshold"] for p in measure["coverage"]] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
        assert all(0.0 <= p["coverage"] <= 1.0 for p in measure["coverage"])
    assert cal["stored"]["ece"] == cal["raw"]["ece"]  # uncalibrated: stored is raw
    assert sorted(cal["fold_users"]) == [USERS // 2, USERS - USERS // 2]
    assert 0.0 < cal["accuracy"] <= 1.0
    # every lite context checks itself on its references (context quality on by default for lite)
    assert cal["spearman_users"] == USERS
    if cal["spearman"] is None:
        assert cal["spearman_note"]
    else:
        assert -1.0 <= cal["spearman"] <= 1.0 and cal["spearman_note"] is None
    assert all(0.0 < u["quality"] < 1.0 and u["tests"] == TESTS for u in cal["users"])
    lite = results["outcomes"]["lite"]
    assert all("confidence" in o and "context_quality" in o for o in lite if o["winner"] in ("A", "B"))


def test_the_summary_and_reports_state_the_trust_figures(run) -> None:  # type: ignore[no-untyped-def]
    printed, results, out = run
    summary = printed["summary"]
    assert re.search(r"lite: ECE \d\.\d{3} \(cross-fitted\); accuracy at confidence >= 0\.8: ", summary), (
        summary
    )
    assert re.search(r"Spearman\(context quality, user accuracy\) (-?\d\.\d\d over 6 users|n/a \()", summary)
    page = (out / "report.html").read_text()
    assert 'id="svg-reliability-0"' in page and 'id="svg-coverage"' in page and page.count("<svg") == 5
    assert "## Confidence and calibration" in (out / "report.md").read_text()
    (cal,) = results["calibration"]
    assert cal["saved_calibration"] and f"calibration saved for lite: {cal['saved_calibration']}" in summary
    (row,) = printed["calibrations"]
    assert row["version"] == cal["saved_calibration"] and row["source"] == f"bench:{results['dataset']}"
    assert row["pairs"] == cal["with_confidence"]
