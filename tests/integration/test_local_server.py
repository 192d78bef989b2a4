"""Tiny random-weight Qwen-VL models behind `pigreward serve`, judged through the queue.

Random weights write random text, so a `pigreward-v1` judgment is stored as invalid with a reason
(never a guessed verdict), while `json-v1` answers are grammar-constrained and always valid.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from models.db import session_scope
from models.judgments import dimensions_of, get_judgment
from ops.stack import REPO, celery_worker, model_server
from tasks import judge
from tasks.runtime import get_db
from tests.integration.helpers import image, user_who_likes_warm
from tests.support.tiny_vlm import build_tiny_vlm

pytestmark = pytest.mark.slow  # loads two tiny VLMs behind a real server (~30 s)

QUEUE = "tiny-vlm"
WORKER_ENV = {"PIGREWARD_JUDGE_MAX_TOKENS": "1500", "PIGREWARD_REASONER_MAX_TOKENS": "48"}


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def served(request, stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    """`pigreward serve` running a tiny model, and a worker whose sglang backend points at it."""
    tmp = tmp_path_factory.mktemp(request.param)
    model_dir = build_tiny_vlm(tmp / "model", request.param)
    with model_server(model_dir, tmp / "server.log") as url:
        env = {**stack.env, "PIGREWARD_SGLANG_URL": url, **WORKER_ENV}
        with celery_worker(env, QUEUE, tmp / "worker.log", concurrency=4):
            user_who_likes_warm(stack, f"tiny-{request.param}")
            yield request.param, url, str(model_dir)


def _judge(user: str, prompt: str, options: dict) -> dict:  # type: ignore[type-arg]
    a = image(_judge.stack, f"tiny/{prompt}-a.png", warmth=0.8, seed=501)  # type: ignore[attr-defined]
    b = image(_judge.stack, f"tiny/{prompt}-b.png", warmth=0.2, seed=502)  # type: ignore[attr-defined]
    return judge.apply_async(args=(user, prompt, a, b, options), queue=QUEUE).get(timeout=300)


def test_pigreward_v1_through_sglang_client_stores_a_judgment(stack, served) -> None:  # type: ignore[no-untyped-def]
    kind, _, model_dir = served
    _judge.stack = stack  # type: ignore[attr-defined]
    result = _judge(f"tiny-{kind}", "a quiet harbour", {"backend": "sglang"})
    assert result["status"] in ("done", "invalid")
    with session_scope(get_db()) as session:
        row = get_judgment(session=session, judgment_id=result["judgment_id"])
    assert row.judge_model == model_dir and row.model_revision.startswith("local-")
    assert row.template_version.startswith("pigreward-v1@") and row.swap
    assert len(row.raw_outputs) == 2 and all(row.raw_outputs)
    if row.status == "invalid":  # random weights: expected, and never a guessed verdict
        assert row.invalid_reason and row.winner is None and row.error
    assert row.usage["prompt_tokens"] > 100 and row.usage["completion_tokens"] > 0


def _rescore_dry_run(stack, url: str, **env: str) -> str:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [sys.executable, "-m", "pigreward.cli", "rescore", "--dry-run", "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**stack.env, **WORKER_ENV, "PIGREWARD_SGLANG_URL": url, "HF_HUB_OFFLINE": "1", **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_judgment_with_other_decoding_is_found_stale(stack, served) -> None:  # type: ignore[no-untyped-def]
    kind, url, _ = served
    _judge.stack = stack  # type: ignore[attr-defined]
    result = _judge(f"tiny-{kind}", "a windmill", {"backend": "sglang"})
    with session_scope(get_db()) as session:
        row = get_judgment(session=session, judgment_id=result["judgment_id"])
    # every decoding field is stored with the verdict, as the worker's settings resolved them
    assert row.decoding["max_tokens"] == 1500 and row.decoding["repetition_penalty"] == 1.05
    assert row.decoding["top_k"] == -1 and row.decoding["stop"] == [] and row.decoding["grammar"] is None
    # the worker's own settings: this model's judgments are current
    assert "decoding" not in _rescore_dry_run(stack, url)
    # another repetition penalty (or grammar): every judgment made with the old one is stale
    changed = _rescore_dry_run(stack, url, PIGREWARD_REPETITION_PENALTY="1.2")
    assert "decoding" in changed, changed
    assert "decoding" in _rescore_dry_run(stack, url, PIGREWARD_GRAMMAR="regex")


def test_json_v1_through_sglang_client_is_valid(stack, served) -> None:  # type: ignore[no-untyped-def]
    kind, _, _ = served
    _judge.stack = stack  # type: ignore[attr-defined]
    result = _judge(f"tiny-{kind}", "a mountain village", {"backend": "sglang", "protocol": "json-v1"})
    with session_scope(get_db()) as session:
        row = get_judgment(session=session, judgment_id=result["judgment_id"])
        dims = dimensions_of(session=session, judgment_id=row.id)  # type: ignore[arg-type]
    assert result["status"] == "done", (row.invalid_reason, row.error, [t[-300:] for t in row.raw_outputs])
    assert row.template_version.startswith("json-v1@")
    assert row.winner in ("A", "B", "tie", "inconsistent")
    assert 1 <= len(dims) <= 5 and all(1 <= d.score_a <= 5 and 1 <= d.score_b <= 5 for d in dims)
    assert row.total_a == sum(d.score_a for d in dims)


def test_server_refuses_urls_it_would_have_to_fetch(served) -> None:  # type: ignore[no-untyped-def]
    _, url, model_dir = served
    body = {
        "model": model_dir,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x"}}],
            }
        ],
        "max_tokens": 4,
    }
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400 and "data: image URLs" in answer.text
    unknown = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": "nope"}, timeout=30)
    assert unknown.status_code == 404
