"""Prompt optimization through a real `optimize` worker: stored rounds, images, judgments, DPO rows."""

from __future__ import annotations

import pytest
from sqlmodel import select

from models.db import session_scope
from models.optimization import candidates_of, export_pairs
from models.tables import Judgment, OptimizationPair, OptimizationRun
from models.tenants import find_tenant
from models.users import delete_user
from ops.stack import celery_worker, wait_until
from tasks import optimize_prompt
from tasks.runtime import get_db
from tasks.submit import submit_optimization
from tests.integration.helpers import user_who_likes_warm
from tests.support.fake_images import fake_image_server

QUEUE = "optimize"


def _finished(run_id: int) -> OptimizationRun | None:
    with session_scope(get_db()) as session:
        run = session.get(OptimizationRun, run_id)
    return run if run is not None and run.status in ("done", "failed") else None


@pytest.fixture(scope="module")
def images(stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    """An `optimize` worker whose generator is our OpenAI-compatible image stand-in, writing to S3."""
    with fake_image_server() as (url, state):
        env = {
            **stack.env,
            "PIGREWARD_OPTIMIZE_GENERATOR": "openai",
            "PIGREWARD_OPTIMIZE_IMAGE_URL": url,
            "PIGREWARD_OPTIMIZE_OUTPUT": "s3://pigreward-test/optimize",
        }
        with celery_worker(env, QUEUE, tmp_path_factory.mktemp("opt") / "worker.log", concurrency=2):
            yield state


def test_an_optimization_stores_rounds_candidates_judgments_and_dpo_pairs(stack, images) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "opt-user")
    run_id, _ = submit_optimization(user="opt-user", prompt="a harbour at dawn", rounds=3, k=3, eval_seeds=4)
    wait_until(lambda: _finished(run_id), 180, "optimization run")
    run = _finished(run_id)
    assert run is not None and run.status == "done", run.error if run else None
    assert run.best_prompt and run.best_prompt != run.base_prompt
    assert "warm golden light" in run.best_prompt  # this user chose the warmer image every time
    assert run.best_win_rate is not None and run.best_win_rate >= 0.5 and run.eval_comparisons == 4
    with session_scope(get_db()) as session:
        cands = candidates_of(session=session, run_id=run_id)
        pairs = list(session.exec(select(OptimizationPair).where(OptimizationPair.run_id == run_id)))
        judged = {p.judgment_id: session.get(Judgment, p.judgment_id) for p in pairs}
        rows = export_pairs(session=session, run_id=run_id)
    assert {c.round for c in cands} == set(range(1, run.rounds_done + 1))
    assert all(c.image_uri.startswith("s3://pigreward-test/optimize/") for c in cands), [
        c.image_uri for c in cands
    ]
    assert stack.s3().head_object(Bucket="pigreward-test", Key=cands[0].image_uri.split("/", 3)[3])
    assert len(images.bodies) >= len(cands)  # one generation request per candidate (plus evaluation)
    assert all(j.prompt == "a harbour at dawn" for j in judged.values())
    # candidates whose modifiers draw the same picture are refused as the same image, never judged
    assert all(
        j.status == "done" or (j.status == "rejected" and "same image" in (j.error or ""))
        for j in judged.values()
    ), [(j.status, j.error) for j in judged.values()]
    assert sum(j.status == "done" for j in judged.values()) >= len(judged) // 2
    assert rows and all(
        r["chosen"] != r["rejected"] and r["user"] == "opt-user" and r["evidence"] for r in rows
    )
    assert any("warm golden light" in r["chosen"] and "warm golden light" not in r["rejected"] for r in rows)
    # each DPO pair says how sure its verdict is (what `optimize export --min-confidence` filters on)
    assert all(0.5 < r["confidence"] <= 1.0 for r in rows)


def test_delay_records_the_run_first_and_deleting_the_user_removes_it(stack, images) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "opt-gone")
    with session_scope(get_db()) as session:
        before = {r.id for r in session.exec(select(OptimizationRun))}
    result = optimize_prompt.delay("opt-gone", "a field", rounds=1, k=2, eval_seeds=0)
    with session_scope(get_db()) as session:  # the row exists as soon as delay() returns
        [run] = [r for r in session.exec(select(OptimizationRun)) if r.id not in before]
    assert run.user_ref == "opt-gone" and run.base_prompt == "a field" and run.options["eval_seeds"] == 0
    summary = result.get(timeout=120)
    assert summary["run_id"] == run.id
    run_id = run.id
    assert _finished(run_id) is not None
    with session_scope(get_db()) as session:
        tenant = find_tenant(session=session, name="default")
        counts = delete_user(session=session, tenant_id=tenant.id, external_id="opt-gone")  # type: ignore[union-attr,arg-type]
    assert counts and counts["optimization_runs"] == 1
    with session_scope(get_db()) as session:
        assert session.get(OptimizationRun, run_id) is None
        assert not candidates_of(session=session, run_id=run_id)
