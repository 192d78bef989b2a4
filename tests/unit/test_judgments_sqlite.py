"""The judgment ledger on SQLite: idempotent writes, status moves, verdicts with dimension rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from core.enums import JudgmentStatus
from models import batches, claims, judgments, recovery
from models.db import current_revision, make_engine, session_scope, upgrade
from models.judgments import DimensionRecord, JudgmentSpec, VerdictRecord
from models.tables import DimensionScore, Judgment, Tenant, utcnow
from models.tenants import ensure_tenant
from models.users import ensure_user


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/db/x.db"
    assert upgrade(url) == current_revision(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def spec(**overrides: object) -> JudgmentSpec:
    base: dict[str, object] = dict(
        tenant="acme",
        user="u1",
        prompt="a lighthouse in a storm",
        image_a="file://a.png",
        image_b="file://b.png",
    )
    return JudgmentSpec(**{**base, **overrides})  # type: ignore[arg-type]


def record(engine: Engine, *specs: JudgmentSpec) -> list[int]:
    with session_scope(engine) as s:
        return judgments.record_judgments(session=s, specs=list(specs))


def row(engine: Engine, jid: int) -> Judgment:
    with session_scope(engine) as s:
        got = judgments.get_judgment(session=s, judgment_id=jid)
        assert got is not None
        return got


def count(engine: Engine, model: type) -> int:
    with session_scope(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def set_status(engine: Engine, jid: int, status: JudgmentStatus, **extra: object) -> None:
    with session_scope(engine) as s:
        r = s.get(Judgment, jid)
        assert r is not None
        r.status = status
        for k, v in extra.items():
            setattr(r, k, v)
        s.add(r)


def verdict(*dims: tuple[str, float, float], **overrides: object) -> VerdictRecord:
    base: dict[str, object] = dict(
        status=JudgmentStatus.done,
        winner="A",
        total_a=sum(d[1] for d in dims),
        total_b=sum(d[2] for d in dims),
        rationale="because",
        raw_outputs=["raw 1"],
        dimensions=[DimensionRecord(name=n, score_a=a, score_b=b, reason=f"why {n}") for n, a, b in dims],
        judge_model="lite-bradley-terry",
        model_revision="1",
        template_version="lite-v1",
        timings={"backend_s": 0.01},
        usage={"tokens": 3},
    )
    return VerdictRecord(**{**base, **overrides})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ schema


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/y.db"
    first = upgrade(url)
    assert first != "base"
    assert upgrade(url) == first
    eng = make_engine(url)
    try:
        tables = set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()
    assert {"judgment", "dimension_score", "tenant", "end_user", "batch"} <= tables


def test_session_scope_rolls_back_on_error(engine: Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        ensure_tenant(session=s, name="ghost")
        raise RuntimeError("boom")
    assert count(engine, Tenant) == 0


# --------------------------------------------------------------------------- record_judgments


def test_record_creates_queued_row(engine: Engine) -> None:
    [jid] = record(engine, spec(options={"swap": True}))
    r = row(engine, jid)
    assert r.status == JudgmentStatus.queued
    assert r.prompt == "a lighthouse in a storm"
    assert (r.image_a_uri, r.image_b_uri) == ("file://a.png", "file://b.png")
    assert r.backend == "lite"
    assert r.options == {"swap": True}
    assert r.swap is True
    assert r.attempts == 0
    assert r.user_ref == "u1"
    assert r.user_id is None  # user not known yet: kept by reference
    assert len(r.key) == 64


def test_record_is_idempotent(engine: Engine) -> None:
    first = record(engine, spec())
    second = record(engine, spec())
    assert first == second
    assert count(engine, Judgment) == 1
    assert count(engine, Tenant) == 1


def test_duplicates_in_one_call_share_a_row(engine: Engine) -> None:
    ids = record(engine, spec(), spec(prompt="other"), spec())
    assert ids[0] == ids[2]
    assert ids[1] != ids[0]
    assert count(engine, Judgment) == 2


def test_different_fields_make_different_rows(engine: Engine) -> None:
    variants = [
        spec(),
        spec(options={"swap": True}),
        spec(options={"swap": False}),
        spec(backend="hf"),
        spec(user="u2"),
        spec(tenant="other"),
        spec(image_a="file://b.png", image_b="file://a.png"),
        spec(prompt="a lighthouse in a storm "),
    ]
    ids = record(engine, *variants)
    assert len(set(ids)) == len(variants)
    assert count(engine, Judgment) == len(variants)


def test_option_key_order_does_not_matter(engine: Engine) -> None:
    a = record(engine, spec(options={"swap": True, "temperature": 0}))
    b = record(engine, spec(options={"temperature": 0, "swap": True}))
    assert a == b


def test_ids_follow_spec_order(engine: Engine) -> None:
    specs = [spec(prompt=f"p{i}") for i in range(5)]
    ids = record(engine, *specs)
    again = record(engine, *reversed(specs))
    assert again == list(reversed(ids))
    for jid, s_ in zip(ids, specs, strict=True):
        assert row(engine, jid).prompt == s_.prompt


def test_large_batches_cross_chunk_boundaries(engine: Engine) -> None:
    specs = [spec(prompt=f"prompt {i}") for i in range(1203)]
    ids = record(engine, *specs)
    assert len(ids) == len(set(ids)) == 1203
    assert record(engine, *specs) == ids
    assert count(engine, Judgment) == 1203


def test_known_user_is_linked(engine: Engine) -> None:
    with session_scope(engine) as s:
        tenant = ensure_tenant(session=s, name="acme")
        user = ensure_user(session=s, tenant_id=tenant.id, external_id="u1")  # type: ignore[arg-type]
        uid = user.id
    [jid] = record(engine, spec())
    [other] = record(engine, spec(user="stranger"))
    assert row(engine, jid).user_id == uid
    assert row(engine, other).user_id is None


@pytest.mark.parametrize("status", [JudgmentStatus.rejected, JudgmentStatus.failed])
def test_resend_requeues_rejected_and_failed(engine: Engine, status: JudgmentStatus) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        claims.close_with_error(
            session=s, judgment_id=jid, status=status, code="image_not_found", message="gone"
        )
    r = row(engine, jid)
    assert (r.status, r.error_code, r.error) == (status, "image_not_found", "gone")
    assert record(engine, spec()) == [jid]
    r = row(engine, jid)
    assert r.status == JudgmentStatus.queued
    assert r.error is None and r.error_code is None
    assert count(engine, Judgment) == 1


@pytest.mark.parametrize("status", [JudgmentStatus.done, JudgmentStatus.invalid, JudgmentStatus.running])
def test_resend_leaves_other_statuses(engine: Engine, status: JudgmentStatus) -> None:
    [jid] = record(engine, spec())
    set_status(engine, jid, status, winner="A")
    assert record(engine, spec()) == [jid]
    r = row(engine, jid)
    assert r.status == status
    assert r.winner == "A"


def test_resend_requeues_only_the_resent_rows(engine: Engine) -> None:
    a, b = record(engine, spec(prompt="a"), spec(prompt="b"))
    for jid in (a, b):
        set_status(engine, jid, JudgmentStatus.failed)
    record(engine, spec(prompt="a"))
    assert row(engine, a).status == JudgmentStatus.queued
    assert row(engine, b).status == JudgmentStatus.failed


# ------------------------------------------------------------------------------- claim_judgment


def claim(s, jid: int, token: str = "t1", lease_s: float = 3600, max_attempts: int = 8):  # type: ignore[no-untyped-def]
    return claims.claim_judgment(
        session=s, judgment_id=jid, token=token, lease_s=lease_s, max_attempts=max_attempts
    )


def test_a_second_message_cannot_take_a_live_claim(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        assert claim(s, jid, "first") is not None
    with session_scope(engine) as s:
        assert claim(s, jid, "second") is None  # duplicate message: skipped
    with session_scope(engine) as s:
        assert claim(s, jid, "first") is not None  # redelivery of the same message: runs again
    assert row(engine, jid).claim_token == "first"
    assert row(engine, jid).attempts == 2


def test_an_expired_claim_is_taken_over_and_the_old_holder_cannot_write(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        assert claim(s, jid, "dead-worker") is not None
    with session_scope(engine) as s:
        assert claim(s, jid, "new-worker", lease_s=0) is not None
    with session_scope(engine) as s, pytest.raises(claims.ClaimLost):
        judgments.finish_judgment(
            session=s, judgment_id=jid, verdict=verdict(("x", 1, 2)), token="dead-worker"
        )
    with session_scope(engine) as s:
        assert not claims.close_with_error(
            session=s,
            judgment_id=jid,
            status=JudgmentStatus.failed,
            code="x",
            message="m",
            token="dead-worker",
        )
    with session_scope(engine) as s:
        judgments.finish_judgment(
            session=s, judgment_id=jid, verdict=verdict(("x", 1, 2)), token="new-worker"
        )
    assert row(engine, jid).status == JudgmentStatus.done
    assert row(engine, jid).claim_token is None


def test_a_crash_loop_ends_as_failed(engine: Engine) -> None:
    [jid] = record(engine, spec())
    for _ in range(3):
        with session_scope(engine) as s:
            assert claim(s, jid, "same", max_attempts=3) is not None
    with session_scope(engine) as s:
        assert claim(s, jid, "same", max_attempts=3) is None
    r = row(engine, jid)
    assert r.status == JudgmentStatus.failed and r.error_code == "attempts_exhausted"


def test_release_puts_the_row_back_for_another_message(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        assert claim(s, jid, "a") is not None
    with session_scope(engine) as s:
        assert not claims.release_judgment(session=s, judgment_id=jid, token="b")
        assert claims.release_judgment(session=s, judgment_id=jid, token="a")
    assert row(engine, jid).status == JudgmentStatus.queued
    with session_scope(engine) as s:
        assert claim(s, jid, "b") is not None


def test_the_sweeper_finds_old_queued_rows_and_silent_claims_only(engine: Engine) -> None:
    a, b, c = record(engine, spec(prompt="a"), spec(prompt="b"), spec(prompt="c"))
    with session_scope(engine) as s:
        claim(s, b, "running")
        judgments.finish_judgment(session=s, judgment_id=c, verdict=verdict(("x", 1, 2)))
    past, future = utcnow() - timedelta(hours=1), utcnow() + timedelta(seconds=1)
    with session_scope(engine) as s:
        assert recovery.queued_before(session=s, before=past) == []
        assert recovery.abandoned(session=s, lease_s=3600) == []
        assert recovery.queued_before(session=s, before=future) == [a]
        assert recovery.abandoned(session=s, lease_s=-1) == [b]


def test_start_marks_running_and_counts_attempts(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        r = claim(s, jid)
        assert r is not None
        assert r.status == JudgmentStatus.running
        assert r.attempts == 1
        assert r.started_at is not None
    with session_scope(engine) as s:  # a redelivery of a still-running judgment runs again
        r = claim(s, jid)
        assert r is not None and r.attempts == 2
    stored = row(engine, jid)
    assert stored.status == JudgmentStatus.running
    assert stored.attempts == 2


@pytest.mark.parametrize("status", [JudgmentStatus.done, JudgmentStatus.invalid])
def test_start_skips_finished(engine: Engine, status: JudgmentStatus) -> None:
    [jid] = record(engine, spec())
    set_status(engine, jid, status)
    with session_scope(engine) as s:
        assert claim(s, jid) is None
    r = row(engine, jid)
    assert r.status == status
    assert r.attempts == 0


def test_start_unknown_is_none(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert claim(s, 424242) is None


def test_start_after_finish_is_none(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        assert claim(s, jid) is not None
    with session_scope(engine) as s:
        judgments.finish_judgment(session=s, judgment_id=jid, verdict=verdict(("x", 1, 2)))
    with session_scope(engine) as s:
        assert claim(s, jid) is None
    assert row(engine, jid).attempts == 1


# ------------------------------------------------------------------------------ finish_judgment


def test_finish_stores_verdict_and_dimensions_in_order(engine: Engine) -> None:
    [jid] = record(engine, spec())
    set_status(engine, jid, JudgmentStatus.running, error="old", error_code="old_code")
    dims = [("Warm palette", 6.5, 4.0), ("Brightness", 5.0, 5.5), ("Contrast", 4.25, 5.0)]
    with session_scope(engine) as s:
        judgments.finish_judgment(session=s, judgment_id=jid, verdict=verdict(*dims, swap=True))
    r = row(engine, jid)
    assert r.status == JudgmentStatus.done
    assert r.winner == "A"
    assert (r.total_a, r.total_b) == (15.75, 14.5)
    assert r.rationale == "because"
    assert r.raw_outputs == ["raw 1"]
    assert r.judge_model == "lite-bradley-terry"
    assert (r.model_revision, r.template_version) == ("1", "lite-v1")
    assert r.swap is True
    assert r.timings == {"backend_s": 0.01}
    assert r.usage == {"tokens": 3}
    assert r.error is None and r.error_code is None
    assert r.finished_at is not None
    with session_scope(engine) as s:
        stored = judgments.dimensions_of(session=s, judgment_id=jid)
    assert [(d.position, d.name, d.score_a, d.score_b) for d in stored] == [
        (i, n, a, b) for i, (n, a, b) in enumerate(dims)
    ]
    assert [d.reason for d in stored] == [f"why {n}" for n, _, _ in dims]


def test_refinish_replaces_dimensions(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with session_scope(engine) as s:
        judgments.finish_judgment(
            session=s, judgment_id=jid, verdict=verdict(("a", 1, 2), ("b", 3, 4), ("c", 5, 6), ("d", 7, 8))
        )
    with session_scope(engine) as s:
        judgments.finish_judgment(
            session=s, judgment_id=jid, verdict=verdict(("x", 9, 1), ("y", 2, 2), ("z", 0, 1), winner="B")
        )
    with session_scope(engine) as s:
        stored = judgments.dimensions_of(session=s, judgment_id=jid)
    assert [(d.position, d.name) for d in stored] == [(0, "x"), (1, "y"), (2, "z")]
    assert count(engine, DimensionScore) == 3
    assert row(engine, jid).winner == "B"


def test_refinish_same_verdict_twice_no_duplicates(engine: Engine) -> None:
    [jid] = record(engine, spec())
    v = verdict(("a", 1, 2), ("b", 3, 4), ("c", 5, 6))
    for _ in range(3):
        with session_scope(engine) as s:
            judgments.finish_judgment(session=s, judgment_id=jid, verdict=v)
    assert count(engine, DimensionScore) == 3


def test_finish_only_touches_its_own_dimensions(engine: Engine) -> None:
    a, b = record(engine, spec(prompt="a"), spec(prompt="b"))
    with session_scope(engine) as s:
        judgments.finish_judgment(
            session=s, judgment_id=a, verdict=verdict(("a1", 1, 2), ("a2", 1, 2), ("a3", 1, 2))
        )
        judgments.finish_judgment(
            session=s, judgment_id=b, verdict=verdict(("b1", 1, 2), ("b2", 1, 2), ("b3", 1, 2))
        )
    with session_scope(engine) as s:
        judgments.finish_judgment(
            session=s, judgment_id=b, verdict=verdict(("c1", 1, 2), ("c2", 1, 2), ("c3", 1, 2))
        )
    with session_scope(engine) as s:
        assert [d.name for d in judgments.dimensions_of(session=s, judgment_id=a)] == ["a1", "a2", "a3"]
        assert [d.name for d in judgments.dimensions_of(session=s, judgment_id=b)] == ["c1", "c2", "c3"]


def test_finish_invalid_verdict(engine: Engine) -> None:
    [jid] = record(engine, spec())
    v = VerdictRecord(
        status=JudgmentStatus.invalid, invalid_reason="first_order:no_scores", raw_outputs=["??"]
    )
    with session_scope(engine) as s:
        judgments.finish_judgment(session=s, judgment_id=jid, verdict=v)
    r = row(engine, jid)
    assert r.status == JudgmentStatus.invalid
    assert r.winner is None
    assert r.invalid_reason == "first_order:no_scores"
    assert r.raw_outputs == ["??"]
    assert count(engine, DimensionScore) == 0
    # An invalid verdict is final: a re-send does not requeue it and a redelivery skips it.
    record(engine, spec())
    assert row(engine, jid).status == JudgmentStatus.invalid


def test_finish_unknown_raises(engine: Engine) -> None:
    with pytest.raises(LookupError), session_scope(engine) as s:
        judgments.finish_judgment(session=s, judgment_id=999, verdict=verdict(("a", 1, 2)))


def test_finish_is_atomic_with_the_session(engine: Engine) -> None:
    [jid] = record(engine, spec())
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        judgments.finish_judgment(
            session=s, judgment_id=jid, verdict=verdict(("a", 1, 2), ("b", 1, 2), ("c", 1, 2))
        )
        raise RuntimeError("worker died before commit")
    assert row(engine, jid).status == JudgmentStatus.queued
    assert count(engine, DimensionScore) == 0


# ---------------------------------------------------------------------------- close_with_error


def test_close_with_error_of_an_unknown_row_is_false_and_writes_nothing(engine: Engine) -> None:
    with session_scope(engine) as s:
        closed = claims.close_with_error(
            session=s, judgment_id=12345, status=JudgmentStatus.failed, code="x", message="y"
        )
    assert closed is False
    with session_scope(engine) as s:
        assert judgments.get_judgment(session=s, judgment_id=12345) is None
        assert judgments.status_counts(session=s) == {}


# ------------------------------------------------------------------------------- status_counts


def test_status_counts(engine: Engine) -> None:
    with session_scope(engine) as s:
        batch = batches.create_batch(session=s, tenant="acme", name="nightly", total=3)
        batch_id = batch.id
        assert batch_id is not None
    in_batch = record(engine, *(spec(prompt=f"b{i}", batch_id=batch_id) for i in range(3)))
    loose = record(engine, *(spec(prompt=f"l{i}") for i in range(4)))
    with session_scope(engine) as s:
        judgments.finish_judgment(session=s, judgment_id=in_batch[0], verdict=verdict(("a", 1, 2)))
        claims.close_with_error(
            session=s, judgment_id=in_batch[1], status=JudgmentStatus.rejected, code="c", message="m"
        )
        claim(s, loose[0])
        claims.close_with_error(
            session=s, judgment_id=loose[1], status=JudgmentStatus.failed, code="c", message="m"
        )
    with session_scope(engine) as s:
        assert judgments.status_counts(session=s) == {
            "queued": 3,
            "done": 1,
            "rejected": 1,
            "running": 1,
            "failed": 1,
        }
        assert judgments.status_counts(session=s, batch_id=batch_id) == {
            "queued": 1,
            "done": 1,
            "rejected": 1,
        }
        assert judgments.status_counts(session=s, ids=loose[:2]) == {"running": 1, "failed": 1}
        assert judgments.status_counts(session=s, ids=iter(loose)) == {"queued": 2, "running": 1, "failed": 1}
        assert judgments.status_counts(session=s, batch_id=batch_id, ids=loose) == {}
        assert judgments.status_counts(session=s, ids=[]) == {}
        assert sum(judgments.status_counts(session=s).values()) == 7


def test_status_counts_empty(engine: Engine) -> None:
    with Session(engine) as s:
        assert judgments.status_counts(session=s) == {}
