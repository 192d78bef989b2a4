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
