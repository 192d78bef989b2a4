"""Recovery on the ledger (SQLite): waiting rows and their horizon, claims and heartbeats, the sweeper.

The sweeper is driven against an in-memory broker that records what it is asked and sent, so each
rule is checked alone: due retries, silent claims, lost messages, and a healthy backlog left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from core.enums import JudgmentStatus
from core.errors import BackendUnavailable, BrokerUnavailable, StoreUnavailable
from models import claims, recovery
from models.db import make_engine, session_scope, upgrade
from models.judgments import JudgmentSpec, get_judgment, record_judgments
from models.tables import Judgment, ReconcileState, utcnow
from workers.outages import Outages
from workers.recovery import Backoff, RecoveryConfig, sweep


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/r.db"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


class FakeBroker:
    """Queue depths we set, a sentinel that is there until we drop it, and every send recorded."""

    def __init__(self) -> None:
        self.depths: dict[str, int] = {}
        self.sentinel: str | None = None
        self.sent: list[tuple[str, list[int]]] = []

    def depth(self, queue: str) -> int:
        return self.depths.get(queue, 0)

    def sentinel_present(self) -> bool:
        return self.sentinel is not None

    def plant_sentinel(self, epoch: str) -> None:
        self.sentinel = epoch

    def send(self, queue: str, judgment_ids: Sequence[int]) -> None:
        self.sent.append((queue, list(judgment_ids)))

    def sent_ids(self) -> list[int]:
        return sorted(i for _, ids in self.sent for i in ids)


CONFIG = RecoveryConfig(interval_s=15, lease_s=60, horizon_s=3600, page=3)


def add(db: Engine, n: int, queue: str = "judge", prefix: str = "p") -> list[int]:
    specs = [
        JudgmentSpec(tenant="t", user="u", prompt=f"{prefix}{i}", image_a="a.png", image_b="b.png")
        for i in range(n)
    ]
    with session_scope(db) as s:
        return record_judgments(session=s, specs=specs, queue=queue)


def shift(db: Engine, judgment_ids: Sequence[int], **ago_s: float) -> None:
    """Move timestamps of rows into the past (`queued_at=120` puts queued_at 120 s ago)."""
    with session_scope(db) as s:
        for jid in judgment_ids:
            row = s.get(Judgment, jid)
            assert row is not None
            for column, seconds in ago_s.items():
                setattr(row, column, utcnow() - timedelta(seconds=seconds))
            s.add(row)


def status(db: Engine, jid: int) -> JudgmentStatus:
    with session_scope(db) as s:
        row = get_judgment(session=s, judgment_id=jid)
        assert row is not None
        return row.status


def swept_before(db: Engine, seconds_ago: float = 5) -> None:
    """As if a sweep had ended `seconds_ago` (no gap: silent claims may be taken back)."""
    with session_scope(db) as s:
        state = s.get(ReconcileState, 1) or ReconcileState(id=1)
        state.last_run_at = utcnow() - timedelta(seconds=seconds_ago)
        state.broker_epoch = "e1"
        s.add(state)


def claim(db: Engine, jid: int, token: str = "t", worker: str = "w1") -> None:
    with session_scope(db) as s:
        assert claims.claim_judgment(
            session=s, judgment_id=jid, token=token, lease_s=60, max_attempts=8, worker=worker
        )


def park(db: Engine, jid: int, token: str = "t", horizon_s: float = 3600) -> JudgmentStatus | None:
    with session_scope(db) as s:
        return claims.park_judgment(
            session=s,
            judgment_id=jid,
            token=token,
            code="store_unavailable",
            message="S3 down",
            retry_in_s=10,
            horizon_s=horizon_s,
        )


# -- waiting rows ---------------------------------------------------------------------------------


def test_a_transient_error_makes_the_row_wait_with_its_error_and_the_next_try(db: Engine) -> None:
    [jid] = add(db, 1)
    claim(db, jid)
    assert park(db, jid) == JudgmentStatus.waiting
    with session_scope(db) as s:
        row = get_judgment(session=s, judgment_id=jid)
        assert row is not None
        assert row.error_code == "store_unavailable" and row.error == "S3 down"
        assert row.transient_failures == 1 and row.claim_token is None
        assert row.retry_at is not None and row.waiting_since is not None


def test_a_streak_longer_than_the_horizon_ends_failed_with_the_last_error(db: Engine) -> None:
    [jid] = add(db, 1)
    claim(db, jid)
    park(db, jid)
    shift(db, [jid], waiting_since=7200)
    claim(db, jid, token="t2")
    assert park(db, jid, token="t2", horizon_s=3600) == JudgmentStatus.failed
    with session_scope(db) as s:
        row = get_judgment(session=s, judgment_id=jid)
        assert row is not None and row.error is not None
        assert "more than 1 h" in row.error and "S3 down" in row.error and row.finished_at is not None


def test_waiting_rows_do_not_count_towards_the_crash_loop_guard(db: Engine) -> None:
    [jid] = add(db, 1)
    for n in range(12):  # more runs than max_attempts, each one recorded
        with session_scope(db) as s:
            assert claims.claim_judgment(
                session=s, judgment_id=jid, token=f"t{n}", lease_s=60, max_attempts=8
            )
        park(db, jid, token=f"t{n}")
    assert status(db, jid) == JudgmentStatus.waiting


def test_a_parked_claim_lost_to_another_worker_is_not_written(db: Engine) -> None:
    [jid] = add(db, 1)
    claim(db, jid, token="old")
    shift(db, [jid], heartbeat_at=120)
    claim(db, jid, token="new")  # the old holder looked dead and was taken over
    assert park(db, jid, token="old") is None
    assert status(db, jid) == JudgmentStatus.running


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(base_s=5, max_s=30)
    for failures, top in ((1, 5), (2, 10), (3, 20), (4, 30), (9, 30)):
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(top / 2 <= d <= top for d in delays)
        assert max(delays) - min(delays) > 0.1 * top  # jittered


# -- claims and heartbeats ------------------------------------------------------------------------


def test_a_chunk_reserves_its_rows_and_a_heartbeat_keeps_only_live_ones(db: Engine) -> None:
    ids = add(db, 4)
    claim(db, ids[3], token="someone-else", worker="w2")
    with session_scope(db) as s:
        mine = claims.reserve_judgments(session=s, judgment_ids=ids, token="chunk", lease_s=60, worker="w1")
    assert mine == sorted(ids[:3])
    shift(db, ids, heartbeat_at=300)
    with session_scope(db) as s:
        assert claims.renew_claims(session=s, worker="w1", judgment_ids=ids[:2]) == 2  # w1 runs two of them
    with session_scope(db) as s:
        assert recovery.abandoned(session=s, lease_s=60) == sorted([ids[2], ids[3]])


# -- the sweeper ----------------------------------------------------------------------------------


def test_the_first_sweep_plants_the_sentinel_and_sends_nothing_of_a_backlog(db: Engine) -> None:
    ids = add(db, 5)
    shift(db, ids, queued_at=3600)
    broker = FakeBroker()
    broker.depths["judge"] = 5  # their messages are in the queue
    report = sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sentinel is not None and broker.sent == [] and report.total == 0


def test_a_healthy_backlog_is_never_sent_again(db: Engine) -> None:
    ids = add(db, 20) + add(db, 7, queue="bulk", prefix="b")
    shift(db, ids, queued_at=3600)
    broker = FakeBroker()
    broker.depths.update({"judge": 20, "bulk": 1})
    for _ in range(3):
        sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent == []


def test_due_waiting_rows_are_requeued_and_sent_in_pages(db: Engine) -> None:
    ids = add(db, 7)
    for jid in ids:
        claim(db, jid, token=f"t{jid}")
        park(db, jid, token=f"t{jid}")
    shift(db, ids[:5], retry_at=1)  # five are due, two are not yet
    broker = FakeBroker()
    broker.sentinel = "e1"
    swept_before(db)
    report = sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent_ids() == sorted(ids[:5]) and report.resent == {"waiting_due": 5}
    assert [len(batch) for _, batch in broker.sent] == [3, 2]  # pages of CONFIG.page
    assert {status(db, jid) for jid in ids[:5]} == {JudgmentStatus.queued}
    assert {status(db, jid) for jid in ids[5:]} == {JudgmentStatus.waiting}


def test_silent_claims_are_taken_back_but_not_right_after_a_gap_in_sweeping(db: Engine) -> None:
    live, dead = add(db, 2)
    claim(db, live, worker="alive")
    claim(db, dead, worker="dead", token="d")
    shift(db, [dead], heartbeat_at=300)
    broker = FakeBroker()
    broker.sentinel = "e1"
    swept_before(db, seconds_ago=600)  # the database was down: nobody could renew meanwhile
    sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent == []  # one interval of grace for live workers to renew first
    sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent == [("judge", [dead])]
    assert status(db, dead) == JudgmentStatus.queued and status(db, live) == JudgmentStatus.running


def test_queued_rows_of_an_empty_queue_are_sent_again_after_two_intervals(db: Engine) -> None:
    old, fresh = add(db, 2)
    shift(db, [old], queued_at=60)
    broker = FakeBroker()
    broker.sentinel = "e1"
    swept_before(db)
    sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent == [("judge", [old])]  # the fresh one's message may still be on its way
    sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent == [("judge", [old])]  # re-sent once: its new message is on its way now


def test_a_broker_that_lost_its_messages_gets_every_queued_row_again(db: Engine) -> None:
    ids = add(db, 4) + add(db, 3, queue="bulk", prefix="b")
    broker = FakeBroker()
    broker.depths.update({"judge": 4, "bulk": 1})
    sweep(db=db, broker=broker, holder="me", config=CONFIG)  # plants the sentinel
    broker.sentinel = None  # the broker restarted empty
    broker.depths.update({"judge": 1, "bulk": 0})  # (new work arrived since)
    report = sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert broker.sent_ids() == sorted(ids) and report.resent == {"broker_lost": 7}
    assert {q for q, _ in broker.sent} == {"judge", "bulk"} and broker.sentinel is not None


def test_waiting_rows_past_the_horizon_are_failed_by_the_sweeper(db: Engine) -> None:
    [jid] = add(db, 1)
    claim(db, jid)
    park(db, jid)
    shift(db, [jid], waiting_since=7200)
    broker = FakeBroker()
    broker.sentinel = "e1"
    report = sweep(db=db, broker=broker, holder="me", config=CONFIG)
    assert report.failed_past_horizon == 1 and status(db, jid) == JudgmentStatus.failed


def test_one_sweeper_at_a_time(db: Engine) -> None:
    with session_scope(db) as s:
        assert recovery.take_sweep(session=s, holder="a", lease_s=60) is not None
    report = sweep(db=db, broker=FakeBroker(), holder="b", config=CONFIG)
    assert report.skipped and report.total == 0
    with session_scope(db) as s:
        recovery.end_sweep(session=s, holder="a", broker_epoch="e", resent={})
    assert sweep(db=db, broker=FakeBroker(), holder="b", config=CONFIG).skipped is None


class DownBroker(FakeBroker):
    def sentinel_present(self) -> bool:
        raise BrokerUnavailable("broker unreachable: connection refused")

    def plant_sentinel(self, epoch: str) -> None:
        raise BrokerUnavailable("broker unreachable: connection refused")


def test_a_failed_sweep_gives_its_lease_back(db: Engine) -> None:
    with pytest.raises(BrokerUnavailable):
        sweep(db=db, broker=DownBroker(), holder="a", config=CONFIG)
    report = sweep(db=db, broker=FakeBroker(), holder="b", config=CONFIG)  # no 60-s wait for a's lease
    assert report.skipped is None


# -- what an operator reads -----------------------------------------------------------------------


def test_an_outage_is_one_line_when_it_starts_and_one_with_its_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    with caplog.at_level(logging.WARNING, logger="workers.outages"):
        for _ in range(5):
            outages.fault(StoreUnavailable("S3 unreachable reading s3://b/k: connection refused"))
        outages.fault(BackendUnavailable("POST /v1/chat/completions failed after 4 attempts"))
        outages.recovered()
        outages.recovered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert "the image store (S3 or disk) is failing" in lines[0] and "the model server is failing" in lines[1]
    assert any(
        "image store (S3 or disk) is answering again" in line and "5 judgment runs" in line for line in lines
    )
    assert all(r.exc_info is None for r in caplog.records)  # no tracebacks
