"""The accuracy harness end to end on the embedded default: a small synthetic set through the queue.

Each run is its own process with a clean environment (the session's `stack` fixture points Celery at
Redis in this one), as a person running the benchmark twice would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.stack import REPO

pytestmark = pytest.mark.slow  # two full accuracy runs on the synthetic set

USERS = 6
SCRIPT = """
import json, sys
from pathlib import Path
from sqlalchemy import text
from bench.accuracy.run import run_accuracy
from bench.accuracy.synthetic import synthetic_jsonl
from core.settings import get_settings
from tasks.runtime import get_db, get_resources

settings = get_settings()
path = synthetic_jsonl(
    settings.resolved_image_root / "bench" / "syn", users=int(sys.argv[1]), seed=0, tests_per_user=10
)
report = run_accuracy(settings, path, Path(sys.argv[2]), ["lite", "lite:swap"], True, False)
with get_db().connect() as conn:
    rows = conn.execute(text("select count(*) from judgment")).scalar_one()
    refs = conn.execute(text("select count(*) from reference_pair")).scalar_one()
print(json.dumps({"results": report.to_dict(), "judgment_rows": rows, "reference_rows": refs}))
"""


def _run(data_dir: Path, out_dir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    env["PIGREWARD_DATA_DIR"] = str(data_dir)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(USERS), str(out_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("bench-accuracy")
    first = _run(tmp / "data", tmp / "out1")
    second = _run(tmp / "data", tmp / "out2")
    return first, second, tmp


def _methods(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["method"]: m for m in run["results"]["methods"]}


def test_lite_beats_the_non_personalized_and_random_baselines(runs) -> None:  # type: ignore[no-untyped-def]
    first, _, tmp = runs
    m = _methods(first)
    assert list(m) == ["lite", "lite:swap", "similarity", "non-personalized", "random"]
    tests = USERS * 10
    assert all(x["tests"] == tests for x in m.values())
    assert m["lite"]["statuses"] == {"done": tests}
    lite = m["lite"]["accuracy_with_tie"]
    assert lite > m["non-personalized"]["accuracy_with_tie"] + 0.1, m
    assert lite > m["random"]["accuracy_with_tie"] + 0.1, m
    assert m["lite"]["interval_with_tie"]["low"] <= lite <= m["lite"]["interval_with_tie"]["high"]
    # both orders through the worker: lite is symmetric, so the orders always agree
    assert m["lite:swap"]["swap_judgments"] == tests and m["lite:swap"]["swap_consistency"] == 1.0
    assert m["lite"]["swap_consistency"] is None
    assert m["lite:swap"]["accuracy_with_tie"] == lite
    for name in ("report.md", "report.html", "results.json"):
        assert (tmp / "out1" / name).is_file()
    page = (tmp / "out1" / "report.html").read_text()
    # 3 accuracy plots, a reliability diagram per judged backend (lite, lite:swap), the coverage curve
    assert page.count("<svg") == 3 + 2 + 1 and all(f'data-method="{x}"' in page for x in m)


def test_a_second_run_reuses_every_judgment_and_adds_no_rows(runs) -> None:  # type: ignore[no-untyped-def]
    first, second, _ = runs
    tests = USERS * 10
    assert first["judgment_rows"] == 2 * tests
    assert second["judgment_rows"] == first["judgment_rows"]
    assert second["reference_rows"] == first["reference_rows"]
    for backend in ("lite", "lite:swap"):
        assert first["results"]["ledger"][backend]["submitted"] == tests
        assert second["results"]["ledger"][backend] == {
            "judgments": tests,
            "reused": tests,
            "submitted": 0,
            "rejudged": 0,
            "released": 0,
        }
    assert second["results"]["stages"]["judge"] < 2.0  # nothing sent, no worker started
    assert second["results"]["batch_id"] is None
    for name, m in _methods(second).items():
        assert m["accuracy_with_tie"] == _methods(first)[name]["accuracy_with_tie"]
