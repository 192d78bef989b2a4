"""Work waiting on a queue that no worker consumes is named, never waited on silently.

The stack's worker consumes `context,judge,bulk`, not `optimize`: a message there waits forever.
`waiting_without_consumer`, `/readyz`, `pigreward status` and the CLI's long waits say so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kombu import Queue

from ops.stack import REPO
from tasks import app
from tasks.broker import waiting_without_consumer
from tests.integration.api_helpers import make_client


@pytest.fixture
def stranded(stack) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """One message on `optimize`, removed afterwards (so no later test's worker finds it)."""
    with app.connection_for_write() as conn:
        conn.Producer().publish({"nothing": "to do"}, routing_key="optimize", declare=[Queue("optimize")])
    try:
        yield
    finally:
        with app.connection_for_write() as conn:
            Queue("optimize")(conn.default_channel).purge()


def test_a_queue_with_messages_and_no_consumer_is_named(stack, stranded) -> None:  # type: ignore[no-untyped-def]
    waiting = waiting_without_consumer(app, ["context", "judge", "optimize", "bulk"], timeout_s=2)
    assert waiting == {"optimize": 1}

    ready = make_client().get("/readyz")
    assert ready.status_code == 200 and ready.json()["waiting_without_consumer"] == {"optimize": 1}
    assert "pigreward worker -Q optimize" in ready.json()["warning"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "pigreward.cli", "status", "--timeout", "2"],
        cwd=REPO,
        env={**env, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("workers: 1 (pigreward-context-judge-bulk-")
    assert any(line.startswith("optimize") and "1 waiting  consumed by 0 worker(s)" in line for line in lines)
    assert any(line.startswith("judge") and "consumed by 1 worker(s)" in line for line in lines)
    assert lines[-1].startswith("warning: no worker consumes 'optimize' (1 waiting)")


def test_nothing_is_named_when_every_waiting_queue_has_a_worker(stack) -> None:  # type: ignore[no-untyped-def]
    assert waiting_without_consumer(app, ["context", "judge", "optimize", "bulk"], timeout_s=2) == {}
    assert "waiting_without_consumer" not in make_client().get("/readyz").json()


def test_a_stalled_wait_says_why_after_a_few_seconds(capsys) -> None:  # type: ignore[no-untyped-def]
    from pigreward.progress import StallHint

    times = iter([0.0, 1.0, 6.0, 7.0, 30.0, 70.0, 80.0])
    hint = StallHint(lambda: "no worker consumes 'optimize' (1 waiting)", clock=lambda: next(times))
    for _ in range(6):
        hint.tick("same state")  # no progress at all
    said = capsys.readouterr().err.splitlines()
    assert said == ["waiting: no worker consumes 'optimize' (1 waiting)"] * 2  # at 6 s, then a minute on


def test_an_api_batch_nobody_consumes_says_so_after_a_few_seconds(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch on a broker whose only worker does not consume `bulk` carries a `warning` naming the
    queue once it is a few seconds old; when a `bulk` worker starts, the batch finishes and the
    warning goes."""
    import time

    from fastapi.testclient import TestClient

    import api.main
    import api.waiting
    from models.db import session_scope
    from models.keys import create_key
    from models.tenants import grant_prefix
    from ops import stack as services
    from tasks.runtime import get_db

    monkeypatch.setattr(api.waiting, "WARN_AFTER_S", 1.0)
    monkeypatch.setattr(api.waiting, "CACHE_S", 0.0)
    images = tmp_path / "images"
    images.mkdir()
    with services.redis_server(tmp_path) as redis_url, services.postgres_database() as database_url:
        env = services.stack_env(
            redis_url=redis_url,
            database_url=database_url,
            s3_endpoint="http://127.0.0.1:9",  # never reached: the unknown user is rejected first
            image_root=images,
            data_dir=tmp_path / "data",
        )
        with services.configured(env):
            with session_scope(get_db()) as session:
                _, key = create_key(session=session, tenant="stranded", name="t")
                grant_prefix(session=session, name="stranded", prefix="s3://stranded/")
            client = TestClient(api.main.create_app(), headers={"Authorization": f"Bearer {key}"})
            item = {
                "user": "nobody",
                "prompt": "p",
                "image_a": "s3://stranded/a.png",
                "image_b": "s3://stranded/b.png",
            }
            with services.celery_worker(env, "context,judge", tmp_path / "judge-worker.log"):
                created = client.post("/v1/batches", json={"name": "stranded", "items": [item]})
                assert created.status_code == 202, created.text
                assert created.json()["warning"] is None  # just submitted: not called stuck yet
                batch = f"/v1/batches/{created.json()['id']}"
                time.sleep(1.5)
                stuck = client.get(batch).json()
                assert not stuck["finished"]
                assert stuck["warning"].startswith("no worker consumes 'bulk' (1 waiting)")
                assert "pigreward worker -Q bulk" in stuck["warning"]
            with services.celery_worker(env, "bulk", tmp_path / "bulk-worker.log"):
                services.wait_until(lambda: client.get(batch).json()["finished"], 60, "the batch")
                final = client.get(batch).json()
                assert final["counts"] == {"rejected": 1}  # an unknown user: rejected, not waiting
                assert final["warning"] is None
