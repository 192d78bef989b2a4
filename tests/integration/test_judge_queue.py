"""tasks.judge.delay(...) end to end: Redis broker, Postgres ledger, SeaweedFS S3, a separate worker process."""

from __future__ import annotations

import json
import subprocess
import sys

from models.db import session_scope
from models.judgments import JudgmentSpec, dimensions_of, get_judgment
from ops.stack import REPO
from pigreward.progress import wait_for_judgments
from tasks import judge, submit_judgments
from tasks.runtime import get_db
from tests.integration.helpers import dimension_count, image, judgment_rows, user_who_likes_warm

CALL = """
import json, sys, tasks
a, b = sys.argv[1], sys.argv[2]
result = tasks.judge.delay("warm-lover", "a harbour at sunset", a, b)
print(json.dumps(result.get(timeout=120)))
"""


def _delay_in_subprocess(stack, a: str, b: str) -> dict:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sys.executable, "-c", CALL, a, b],
        cwd=REPO,
        env={**__import__("os").environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_delay_from_another_process_stores_a_done_judgment_once(stack) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "warm-lover")
    warm = image(stack, "new/warm.png", warmth=0.95, seed=7)
    cold = image(stack, "new/cold.png", warmth=0.05, seed=8)

    first = _delay_in_subprocess(stack, warm, cold)
    assert first["status"] == "done", first
    with session_scope(get_db()) as session:
        row = get_judgment(session=session, judgment_id=first["judgment_id"])
        dims = dimensions_of(session=session, judgment_id=first["judgment_id"])
    assert row is not None and row.status == "done"
    assert row.winner == "A"  # the warm image, for a user who always chose the warmer one
    assert 3 <= len(dims) <= 5
    assert abs(sum(d.score_a for d in dims) - row.total_a) < 0.05
    assert row.judge_model == "lite-bradley-terry" and row.template_version == "lite-v1"
    assert row.context_id is not None and row.image_a_id is not None
    assert any("Warm" in d.name for d in dims)
    rows_before = len(judgment_rows())
    dims_before = dimension_count(row.id)  # type: ignore[arg-type]

    second = _delay_in_subprocess(stack, warm, cold)
    assert second["judgment_id"] == first["judgment_id"]
    assert second["skipped"] is True
    assert len(judgment_rows()) == rows_before
    assert dimension_count(row.id) == dims_before  # type: ignore[arg-type]


def test_opposite_users_get_opposite_verdicts_through_the_queue(stack) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "likes-warm", warm=True)
    user_who_likes_warm(stack, "likes-cool", warm=False)
    warm = image(stack, "opp/warm.png", warmth=0.9, seed=21)
    cold = image(stack, "opp/cold.png", warmth=0.1, seed=22)
    results = [judge.delay(u, "a city street", warm, cold) for u in ("likes-warm", "likes-cool")]
    verdicts = [r.get(timeout=120) for r in results]
    assert [v["status"] for v in verdicts] == ["done", "done"]
    assert [v["winner"] for v in verdicts] == ["A", "B"]
    # each result says how sure it is (no calibration in this ledger: the raw value, uncalibrated)
    assert all(0.5 < v["confidence"] <= 1.0 and v["calibration_version"] is None for v in verdicts)


def test_chunked_bulk_form_judges_every_row(stack) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "bulk-user")
    uris = [image(stack, f"bulk/{i}.png", warmth=i / 11, seed=40 + i) for i in range(12)]
    specs = [
        JudgmentSpec(
            tenant="default", user="bulk-user", prompt=f"p{i}", image_a=uris[i], image_b=uris[11 - i]
        )
        for i in range(12)
        if i != 11 - i
    ]
    ids = submit_judgments(specs, chunk_size=5)
    counts = wait_for_judgments(get_db(), ids, progress=False, timeout_s=120)
    rows = {r.id: r for r in judgment_rows(lambda r: r.id in ids)}
    assert counts == {"done": len(specs)}, [(r.status, r.error) for r in rows.values() if r.status != "done"]
    for jid, spec in zip(ids, specs, strict=True):
        warmer_is_a = uris.index(spec.image_a) > uris.index(spec.image_b)
        assert rows[jid].winner == ("A" if warmer_is_a else "B")
