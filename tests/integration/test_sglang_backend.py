"""The `sglang` backend over real HTTP: concurrency from one worker process, retries, bad answers."""

from __future__ import annotations

import json

import pytest

from models.db import session_scope
from models.judgments import JudgmentSpec, get_judgment
from ops.stack import celery_worker
from pigreward.progress import wait_for_judgments
from tasks import judge, submit_judgments
from tasks.runtime import get_db
from tests.integration.helpers import image, user_who_likes_warm
from tests.support.fake_openai import fake_openai_server

QUEUE = "lvlm-test"


@pytest.fixture(scope="module")
def fake(stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A latency-injecting fake server and one worker process pointed at it."""
    with fake_openai_server(delay=0.5) as (url, state):
        env = {
            **stack.env,
            "PIGREWARD_SGLANG_URL": url,
            "PIGREWARD_CHUNK_CONCURRENCY": "48",
            "PIGREWARD_SGLANG_MAX_IN_FLIGHT": "64",
        }
        log = tmp_path_factory.mktemp("lvlm") / "worker.log"
        with celery_worker(env, QUEUE, log, concurrency=2):
            user_who_likes_warm(stack, "lvlm-user")
            yield url, state


def _row(judgment_id: int):  # type: ignore[no-untyped-def]
    with session_scope(get_db()) as session:
        return get_judgment(session=session, judgment_id=judgment_id)


@pytest.mark.slow  # 96 requests at 0.5 s latency
def test_one_worker_process_keeps_at_least_32_requests_in_flight(stack, fake) -> None:  # type: ignore[no-untyped-def]
    _, state = fake
    uris = [image(stack, f"lvlm/{i}.png", warmth=i / 47, seed=300 + i) for i in range(48)]
    specs = [
        JudgmentSpec(
            tenant="default",
            user="lvlm-user",
            prompt=f"scene {i}",
            image_a=uris[i],
            image_b=uris[(i + 1) % 48],
            backend="sglang",
            options={"swap": True},
        )
        for i in range(48)
    ]
    state.max_in_flight = 0
    ids = submit_judgments(specs, chunk_size=48, queue=QUEUE)
    counts = wait_for_judgments(get_db(), ids, progress=False, timeout_s=120)
    assert counts == {"done": 48}
    assert state.max_in_flight >= 32, state.max_in_flight
    row = _row(ids[0])
    assert row.judge_model == "stub-judge" and row.model_revision == "abc1234def"
    assert row.template_version.startswith("pigreward-v1@")
    assert row.swap and len(row.raw_outputs) == 2 and row.winner in ("A", "B")
    assert row.usage["prompt_tokens"] == 200 and row.usage["completion_tokens"] == 80


def test_requests_of_one_user_share_a_byte_identical_prefix(stack, fake) -> None:  # type: ignore[no-untyped-def]
    _, state = fake
    uris = [image(stack, f"lvlm/prefix-{i}.png", warmth=i / 5, seed=500 + i) for i in range(6)]
    specs = [
        JudgmentSpec(
            tenant="default",
            user="lvlm-user",
            prompt=f"prefix scene {i}",
            image_a=uris[i],
            image_b=uris[i + 1],
            backend="sglang",
            options={"swap": True},
        )
        for i in range(5)
    ]
    state.bodies.clear()
    ids = submit_judgments(specs, queue=QUEUE)
    assert wait_for_judgments(get_db(), ids, progress=False, timeout_s=120) == {"done": 5}
    judge_bodies = [b for b in state.bodies if "(chosen)" not in json.dumps(b)]
    assert len(judge_bodies) == 10  # both orders of five judgments
    texts = [json.dumps(b["messages"]) for b in judge_bodies]
    prefixes = {t[: t.index("Prompt:")] for t in texts}
    assert len(prefixes) == 1  # instructions + the user's context, identical for every judgment
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 512 for b in judge_bodies)


def test_503_twice_then_200_gives_a_stored_judgment(stack, fake) -> None:  # type: ignore[no-untyped-def]
    _, state = fake
    a = image(stack, "lvlm/flaky-a.png", warmth=0.9, seed=401)
    b = image(stack, "lvlm/flaky-b.png", warmth=0.1, seed=402)
    result = judge.apply_async(args=("lvlm-user", "flaky-503", a, b, {"backend": "sglang"}), queue=QUEUE).get(
        timeout=60
    )
    assert result["status"] == "done"
    assert state.calls["flaky-503"] == 4  # two 503s, then one answer per order
    assert _row(result["judgment_id"]).attempts == 1  # retried inside the client, not by Celery


def test_a_server_answering_garbage_gives_invalid_not_a_crash(stack, fake) -> None:  # type: ignore[no-untyped-def]
    a = image(stack, "lvlm/garbage-a.png", warmth=0.7, seed=403)
    b = image(stack, "lvlm/garbage-b.png", warmth=0.3, seed=404)
    result = judge.apply_async(args=("lvlm-user", "garbage", a, b, {"backend": "sglang"}), queue=QUEUE).get(
        timeout=60
    )
    assert result["status"] == "invalid"
    row = _row(result["judgment_id"])
    assert row.invalid_reason == "first_order:malformed_response"
    assert row.winner is None and "upstream said something else" in row.raw_outputs[0]
