"""Nightly re-scoring on the real stack: exactly the stale set, once; history kept; crash resume."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from models.db import session_scope
from models.references import add_reference
from models.rescoring import flag_judgment, history_of
from models.tables import Judgment, JudgmentHistory, RescoreRun
from models.tenants import find_tenant
from models.users import find_user
from pigreward.progress import wait_for_judgments
from tasks import judge, rescore_stale
from tasks.rescoring import send_to_bulk
from tasks.runtime import get_db, get_resources
from tests.integration.helpers import image, user_who_likes_warm
from workers.rescoring import run_rescore

pytestmark = pytest.mark.slow  # judges, re-scores and resumes whole runs (~25 s)

USERS = ["rs-a", "rs-b", "rs-c", "rs-d"]


@pytest.fixture(scope="module")
def judged(stack):  # type: ignore[no-untyped-def]
    """Three judgments for each of four users, all done."""
    uris = [image(stack, f"rescore/{i}.png", warmth=i / 5, seed=800 + i) for i in range(6)]
    results = []
    for user in USERS:
        user_who_likes_warm(stack, user)
        results += [judge.delay(user, f"p{i}", uris[i], uris[5 - i]) for i in range(3)]
    ids = [r.get(timeout=120)["judgment_id"] for r in results]
    assert wait_for_judgments(get_db(), ids, progress=False, timeout_s=60) == {"done": len(ids)}
    return {user: ids[3 * n : 3 * n + 3] for n, user in enumerate(USERS)}


def _engine():  # type: ignore[no-untyped-def]
    return get_db()


def _history_counts(ids: list[int]) -> dict[int, int]:
    with session_scope(_engine()) as session:
        return {jid: len(history_of(session=session, judgment_id=jid)) for jid in ids}


def test_exactly_the_stale_set_is_rescored_once(stack, judged) -> None:  # type: ignore[no-untyped-def]
    everyone = [jid for ids in judged.values() for jid in ids]
    # the template version changed for users a and b (their verdicts came from an older template)
    with session_scope(_engine()) as session:
        session.execute(
            sa.update(Judgment)
            .where(col(Judgment.id).in_(judged["rs-a"] + judged["rs-b"]))
            .values(template_version="lite-v0")
        )
        flag_judgment(session=session, judgment_id=judged["rs-d"][0])  # a person flagged one of d's
    stale = set(judged["rs-a"] + judged["rs-b"] + judged["rs-d"][:1])

    dry = rescore_stale.delay(run_key="test-night-1", dry_run=True).get(timeout=60)
    assert dry["by_reason"] == {"template": 6, "flagged": 1} and dry["requeued"] == 0

    first = rescore_stale.delay(run_key="test-night-1").get(timeout=120)
    assert first["requeued"] == len(stale) and first["by_reason"] == {"template": 6, "flagged": 1}
    assert wait_for_judgments(_engine(), everyone, progress=False, timeout_s=120) == {"done": len(everyone)}
    counts = _history_counts(everyone)
    assert {jid for jid, n in counts.items() if n} == stale and max(counts.values()) == 1
    with session_scope(_engine()) as session:
        rows = {j.id: j for j in session.exec(select(Judgment).where(col(Judgment.id).in_(everyone)))}
        old = history_of(session=session, judgment_id=judged["rs-a"][0])[0]
    assert all(rows[jid].template_version == "lite-v1" for jid in stale)  # the current template now
    assert (
        old.snapshot["template_version"] == "lite-v0"
        and old.snapshot["dimensions"]
        and old.reason == "template"
    )
    assert rows[judged["rs-d"][0]].flagged_at is None

    again = rescore_stale.delay(run_key="test-night-1").get(timeout=60)  # the same night: nothing added
    assert again["already_done"] and again["requeued"] == len(stale)
    next_night = rescore_stale.delay(run_key="test-night-2").get(timeout=60)  # nothing is stale any more
    assert next_night["requeued"] == 0 and not next_night["already_done"]
    assert _history_counts(everyone) == counts


def test_a_new_reference_makes_the_users_judgments_stale_by_context(stack, judged) -> None:  # type: ignore[no-untyped-def]
    with session_scope(_engine()) as session:
        tenant = find_tenant(session=session, name="default")
        user = find_user(session=session, tenant_id=tenant.id, external_id="rs-c")  # type: ignore[union-attr,arg-type]
        add_reference(
            session=session,
            user_id=user.id,  # type: ignore[union-attr,arg-type]
            prompt="one more",
            chosen_uri=image(stack, "rescore/extra-warm.png", warmth=0.95, seed=900),
            rejected_uri=image(stack, "rescore/extra-cool.png", warmth=0.05, seed=901),
        )
    dry = rescore_stale.delay(run_key="test-context", dry_run=True).get(timeout=120)
    report = rescore_stale.delay(run_key="test-context").get(timeout=120)
    assert report["by_reason"] == dry["by_reason"] == {"context": 3} and report["requeued"] == 3
    assert wait_for_judgments(_engine(), judged["rs-c"], progress=False, timeout_s=120) == {"done": 3}


def test_rows_stale_after_the_nights_run_are_rescored_by_a_follow_up(stack, judged) -> None:  # type: ignore[no-untyped-def]
    """The night's run is done; then a person flags a verdict: the dry run counts it and a second run
    of the same night re-scores it (under `<key>+2`) instead of saying "nothing added"."""
    first = rescore_stale.delay(run_key="test-night-f").get(timeout=120)
    ids = [jid for group in judged.values() for jid in group]
    assert wait_for_judgments(_engine(), ids, progress=False, timeout_s=120) == {"done": len(ids)}
    assert not first["already_done"]
    with session_scope(_engine()) as session:
        flag_judgment(session=session, judgment_id=judged["rs-b"][1])
    dry = rescore_stale.delay(run_key="test-night-f", dry_run=True).get(timeout=60)
    assert dry["by_reason"] == {"flagged": 1}
    again = rescore_stale.delay(run_key="test-night-f").get(timeout=120)
    assert again["follow_up_of"] == "test-night-f" and again["run_key"] == "test-night-f+2"
    assert again["by_reason"] == dry["by_reason"] and again["requeued"] == 1 and not again["already_done"]
    assert wait_for_judgments(_engine(), [judged["rs-b"][1]], progress=False, timeout_s=120) == {"done": 1}
    third = rescore_stale.delay(run_key="test-night-f").get(timeout=60)  # nothing new: nothing added
    assert third["already_done"] and third["run_key"] == "test-night-f"


def test_a_crashed_run_resumes_where_it_stopped(stack, judged) -> None:  # type: ignore[no-untyped-def]
    ids = judged["rs-a"] + judged["rs-b"]
    with session_scope(_engine()) as session:
        session.execute(
            sa.update(Judgment).where(col(Judgment.id).in_(ids)).values(template_version="lite-v0")
        )
    before = _history_counts(ids)
    sent: list[list[int]] = []

    def dies_after_first_chunk(chunk) -> None:  # type: ignore[no-untyped-def]
        if sent:
            raise RuntimeError("worker host lost power")
        sent.append(list(chunk))
        send_to_bulk(chunk)

    with pytest.raises(RuntimeError):
        run_rescore(get_resources(), run_key="test-crash", send=dies_after_first_chunk, chunk_size=2)
    with session_scope(_engine()) as session:
        run = session.exec(select(RescoreRun).where(RescoreRun.run_key == "test-crash")).one()
        assert run.status == "running"
    # the second chunk's rows were archived and re-queued before the send failed: the workers' sweeper
    # re-sends them (queued, their queue empty); the resumed run's own pass must not archive them twice
    resumed = rescore_stale.delay(run_key="test-crash").get(timeout=120)
    assert resumed["requeued"] == 6 and not resumed["already_done"]
    rescued = [jid for jid in ids if jid not in sent[0]]
    assert wait_for_judgments(_engine(), ids, progress=False, timeout_s=120) == {"done": 6}
    after = _history_counts(ids)
    assert all(after[jid] == before[jid] + 1 for jid in ids), (before, after, rescued)
    with session_scope(_engine()) as session:
        n = session.exec(select(sa.func.count()).select_from(JudgmentHistory)).one()
    assert n >= 6
