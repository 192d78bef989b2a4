"""Transient errors are retried with backoff, then recorded as `failed` with the reason on the row."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from models.db import session_scope
from models.judgments import get_judgment
from ops.stack import REPO, celery_worker, free_port
from tasks.runtime import get_db
from tests.integration.helpers import image, user_who_likes_warm

pytestmark = pytest.mark.slow  # waits out real S3 retries with backoff (~15 s)

CALL = """
import sys, tasks
r = tasks.judge.apply_async(args=("s3-outage-user", "a forest", sys.argv[1], sys.argv[2]), queue="judge")
print(r.id)
"""


def test_unreachable_store_is_retried_then_recorded_as_failed(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "s3-outage-user")
    a = image(stack, "outage/a.png", warmth=0.8, seed=81)
    b = image(stack, "outage/b.png", warmth=0.2, seed=82)
    # A worker on its own broker database whose S3 endpoint is a closed port, with one retry.
    env = {
        **stack.env,
        "PIGREWARD_BROKER_URL": f"{stack.redis_url}/3",
        "PIGREWARD_RESULT_BACKEND": f"{stack.redis_url}/4",
        "PIGREWARD_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "PIGREWARD_MAX_RETRIES": "1",
    }
    with celery_worker(env, "judge", tmp_path / "outage-worker.log", concurrency=1):
        subprocess.run(
            [sys.executable, "-c", CALL, a, b], cwd=REPO, env={**os.environ, **env}, check=True, timeout=60
        )
        deadline = time.monotonic() + 120
        row = None
        while time.monotonic() < deadline:
            with session_scope(get_db()) as session:
                from sqlmodel import select

                from models.tables import Judgment

                row = session.exec(select(Judgment).where(Judgment.user_ref == "s3-outage-user")).first()
                if row is not None and row.status == "failed":
                    break
            time.sleep(0.5)
    assert row is not None and row.status == "failed", row
    assert row.error_code == "store_unavailable"
    assert "S3 unreachable" in (row.error or "")
    assert row.attempts == 2  # the first try and one retry
    with session_scope(get_db()) as session:
        assert get_judgment(session=session, judgment_id=row.id).finished_at is not None  # type: ignore[union-attr]
    assert "Retry in" in (tmp_path / "outage-worker.log").read_text()
