"""Transient trouble makes a judgment wait, with the error on its row, and it finishes once the trouble ends."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from sqlmodel import select

from models.db import session_scope
from models.tables import Judgment
from ops.proxy import TcpProxy
from ops.stack import REPO, celery_worker, wait_until
from tasks.runtime import get_db
from tests.integration.helpers import image, user_who_likes_warm

pytestmark = pytest.mark.slow  # an S3 outage and its recovery, through a real worker

CALL = """
import sys, tasks
r = tasks.judge.apply_async(args=("s3-outage-user", "a forest", sys.argv[1], sys.argv[2]), queue="outage")
print(r.id)
"""


def _row() -> Judgment | None:
    with session_scope(get_db()) as session:
        return session.exec(select(Judgment).where(Judgment.user_ref == "s3-outage-user")).first()


def test_a_judgment_waits_out_an_s3_outage_and_finishes_when_s3_is_back(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "s3-outage-user")
    a = image(stack, "outage/a.png", warmth=0.8, seed=81)
    b = image(stack, "outage/b.png", warmth=0.2, seed=82)
    s3 = urlsplit(stack.s3_endpoint)
    proxy = TcpProxy(s3.hostname or "127.0.0.1", s3.port or 80)
    proxy.up()
    proxy.down()  # S3 is unreachable from the start
    # a worker of its own queue (where the sweeper sends this row again too), reading S3 through the proxy
    env = {**stack.env, "PIGREWARD_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    log = tmp_path / "outage-worker.log"
    with celery_worker(env, "outage", log, concurrency=1):
        subprocess.run(
            [sys.executable, "-c", CALL, a, b], cwd=REPO, env={**os.environ, **env}, check=True, timeout=60
        )
        wait_until(lambda: (r := _row()) is not None and r.transient_failures >= 2, 60, "two failed tries")
        row = _row()
        assert row is not None and row.status in ("waiting", "queued", "running")
        assert row.error_code == "store_unavailable" and "S3 unreachable" in (row.error or "")
        proxy.up()
        wait_until(lambda: (r := _row()) is not None and r.status == "done", 60, "the judgment done")
    row = _row()
    assert row is not None and row.winner == "A" and row.error is None and row.transient_failures == 0
    text = log.read_text()
    assert "waiting, next try in" in text and "is failing" in text and "is answering again" in text
    assert "Traceback" not in text
