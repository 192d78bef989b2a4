"""The one submit path: every call records its ledger row first, messages carry only the row id,
and lost messages are recovered from the ledger."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from sqlmodel import select

from models.db import session_scope
from models.judgments import JudgmentSpec, record_judgments
from models.tables import Judgment, Tenant
from ops.stack import REPO, free_port
from pigreward.progress import wait_for_judgments
from tasks import app, judge, reconcile
from tasks.runtime import get_db
from tests.integration.helpers import image, user_who_likes_warm


def _row(judgment_id: int) -> tuple[Judgment, str]:
    with session_scope(get_db()) as session:
        row = session.get(Judgment, judgment_id)
        tenant = session.get(Tenant, row.tenant_id)  # type: ignore[union-attr]
        return row, tenant.name  # type: ignore[return-value,union-attr]


def _rows(user: str) -> list[Judgment]:
    with session_scope(get_db()) as session:
        return list(session.exec(select(Judgment).where(Judgment.user_ref == user)))


def test_positional_tenant_is_kept(stack) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "acme-user", tenant="acme")
    a = image(stack, "paths/a.png", warmth=0.9, seed=91)
    b = image(stack, "paths/b.png", warmth=0.1, seed=92)
    result = judge.delay("acme-user", "p", a, b, None, "acme").get(timeout=120)
    row, tenant = _row(result["judgment_id"])
    assert tenant == "acme" and row.status == "done" and row.winner == "A"


def test_the_row_is_written_before_the_message_and_a_signature_takes_the_same_path(stack) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "sig-user")
    a = image(stack, "paths/sa.png", warmth=0.8, seed=93)
    b = image(stack, "paths/sb.png", warmth=0.2, seed=94)
    pending = judge.apply_async(args=("sig-user", "later", a, b), countdown=3)
    [row] = _rows("sig-user")  # recorded at once; the message is not due for 3 s
    assert row.prompt == "later" and row.status == "queued"
    assert pending.get(timeout=120)["judgment_id"] == row.id
    via_signature = judge.s("sig-user", "sig", a, b).delay().get(timeout=120)
    assert via_signature["status"] == "done"
    again = judge.s("sig-user", "sig", a, b).delay().get(timeout=120)
    assert again["judgment_id"] == via_signature["judgment_id"] and again["skipped"]
    assert sorted(r.prompt for r in _rows("sig-user")) == ["later", "sig"]


def test_a_message_without_a_judgment_id_is_refused_and_records_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    a = image(stack, "paths/ra.png", warmth=0.8, seed=97)
    b = image(stack, "paths/rb.png", warmth=0.2, seed=98)
    result = app.send_task("pigreward.judge", args=["raw-user", "sent", a, b])
    with pytest.raises(TypeError):
        result.get(timeout=60)
    assert _rows("raw-user") == []


def test_the_sweeper_resends_a_judgment_whose_message_was_lost(stack) -> None:  # type: ignore[no-untyped-def]
    user_who_likes_warm(stack, "lost-user")
    a = image(stack, "paths/la.png", warmth=0.85, seed=95)
    b = image(stack, "paths/lb.png", warmth=0.15, seed=96)
    with session_scope(get_db()) as session:  # a ledger row whose message never went out
        [judgment_id] = record_judgments(
            session=session,
            specs=[JudgmentSpec(tenant="default", user="lost-user", prompt="lost", image_a=a, image_b=b)],
        )
    assert _row(judgment_id)[0].status == "queued"
    # no one calls anything: the worker's own sweeper sees a queued row whose queue is empty
    counts = wait_for_judgments(get_db(), [judgment_id], progress=False, timeout_s=60)
    assert counts == {"done": 1}
    assert "reconcile: re-sent" in stack.worker_log.read_text()
    summary = reconcile.delay().get(timeout=60)  # an operator's sweep on demand: nothing left to send
    assert summary["resent"] == 0 or summary["skipped"]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    return subprocess.run(
        [sys.executable, "-m", "pigreward.cli", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pigreward_reconcile_sweeps_once_and_names_an_unreachable_broker(stack) -> None:  # type: ignore[no-untyped-def]
    done = _cli(stack.env, "reconcile")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"(re-sent \d+ judgments.*|nothing done: another sweeper holds the lease)\n", done.stdout
    )
    down = _cli({**stack.env, "PIGREWARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}, "reconcile")
    assert down.returncode == 1
    assert "cannot sweep: broker unreachable" in down.stderr and "Traceback" not in down.stderr
