"""The pipeline called directly, without Celery, on SQLite and local files."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import TransientError
from models.db import make_engine, session_scope, upgrade
from models.judgments import JudgmentSpec, get_judgment, record_judgments
from models.references import add_reference
from models.tables import UserContext
from models.tenants import ensure_tenant
from models.users import ensure_user
from workers.backends.lite import LiteBackend
from workers.drawing import DrawParams, draw_image
from workers.imaging import ImageLimits, ImageLoader
from workers.pipeline import Resources, chunk_contexts, ensure_context, run_judgment
from workers.store import ImageStore, StoreConfig


class CountingLite(LiteBackend):
    builds = 0

    def build_context(self, references):  # type: ignore[no-untyped-def]
        type(self).builds += 1
        return super().build_context(references)


@pytest.fixture
def res(tmp_path: Path) -> Resources:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(8):
        warmth = 0.9 if i % 2 == 0 else 0.1
        draw_image(
            DrawParams(
                warmth=warmth,
                saturation=0.6,
                brightness=0.5,
                clutter=0.3,
                centering=0.5,
                symmetry=0.5,
                seed=i,
            ),
            size=96,
        ).save(root / f"{i}.png")
    backend = CountingLite()
    CountingLite.builds = 0
    return Resources(
        db=make_engine(url),
        loader=ImageLoader(ImageStore(StoreConfig(image_root=root)), ImageLimits()),
        backend_for=lambda name, protocol=None: backend,
        context_quality=False,  # builds are counted here: the leave-one-out check builds more (test_trust.py)
    )


def _user(res: Resources, pairs: list[tuple[int, int]]) -> int:
    with session_scope(res.db) as session:
        tenant = ensure_tenant(session=session, name="default")
        user = ensure_user(session=session, tenant_id=tenant.id, external_id="u")  # type: ignore[arg-type]
        for i, (c, r) in enumerate(pairs):
            add_reference(
                session=session,
                user_id=user.id,
                prompt=f"p{i}",
                chosen_uri=f"{c}.png",
                rejected_uri=f"{r}.png",
            )  # type: ignore[arg-type]
        return user.id  # type: ignore[return-value]


def test_context_is_built_once_and_rebuilt_when_references_change(res: Resources) -> None:
    backend = res.backend_for("lite", None)
    user_id = _user(res, [(0, 1), (2, 3)])
    first, _ = ensure_context(res=res, backend=backend, user_id=user_id)
    again, _ = ensure_context(res=res, backend=backend, user_id=user_id)
    assert first.id == again.id and CountingLite.builds == 1
    _user(res, [(4, 5)])  # one more reference: a new context version
    third, data = ensure_context(res=res, backend=backend, user_id=user_id)
    assert third.id != first.id and third.reference_count == 3 and len(data.rationales) == 3
    assert CountingLite.builds == 2
    with session_scope(res.db) as session:
        assert session.get(UserContext, first.id) is not None  # the old version stays as history


def test_run_judgment_directly_and_a_duplicate_claim_is_skipped(res: Resources) -> None:
    _user(res, [(0, 1), (2, 3), (4, 5)])
    with session_scope(res.db) as session:
        [jid] = record_judgments(
            session=session,
            specs=[
                JudgmentSpec(tenant="default", user="u", prompt="x", image_a="file://6.png", image_b="7.png")
            ],
        )
    summary = run_judgment(res=res, judgment_id=jid, token="direct")
    assert summary.status == "done" and summary.winner == "A"  # 6 is warm, like every chosen image
    again = run_judgment(res=res, judgment_id=jid, token="other")
    assert again.skipped and again.status == "done"
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=jid)
    assert row.attempts == 1 and row.claim_token is None  # type: ignore[union-attr]


def test_image_ids_are_cached_and_a_stale_id_is_forgotten_and_retried(res: Resources) -> None:
    _user(res, [(0, 1), (2, 3)])
    with session_scope(res.db) as session:
        jids = record_judgments(
            session=session,
            specs=[
                JudgmentSpec(tenant="default", user="u", prompt=p, image_a="6.png", image_b="7.png")
                for p in ("first", "second")
            ],
        )
    assert run_judgment(res=res, judgment_id=jids[0], token="t1").status == "done"
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=jids[0])
    assert set(res.image_ids.values()) == {row.image_a_id, row.image_b_id}  # type: ignore[union-attr]
    sha_a = next(sha for sha, i in res.image_ids.items() if i == row.image_a_id)  # type: ignore[union-attr]
    res.image_ids[sha_a] = 987_654  # as if the database had been replaced under the worker
    with pytest.raises(TransientError):  # a caller that retries itself sees the error
        run_judgment(res=res, judgment_id=jids[1], token="t2", park=False)
    assert res.image_ids == {}  # forgotten: the retry looks the rows up again
    res.image_ids[sha_a] = 987_654
    parked = run_judgment(res=res, judgment_id=jids[1], token="t2")  # redelivered, the queue's way: it waits
    assert parked.status == "waiting" and parked.error_code == "database_unavailable"
    assert res.image_ids == {}
    summary = run_judgment(res=res, judgment_id=jids[1], token="t4")
    assert summary.status == "done"
    with session_scope(res.db) as session:
        again = get_judgment(session=session, judgment_id=jids[1])
    assert (again.image_a_id, again.image_b_id) == (row.image_a_id, row.image_b_id)  # type: ignore[union-attr]


def _judgments(res: Resources, users: list[str], prompt: str = "x") -> list[int]:
    with session_scope(res.db) as session:
        return record_judgments(
            session=session,
            specs=[
                JudgmentSpec(
                    tenant="default", user=u, prompt=f"{prompt} {u}", image_a="6.png", image_b="7.png"
                )
                for u in users
            ],
        )


def test_a_chunk_looks_its_users_contexts_up_once_and_its_judgments_use_them(res: Resources) -> None:
    user_id = _user(res, [(0, 1), (2, 3)])
    backend = res.backend_for("lite", None)
    built, _ = ensure_context(res=res, backend=backend, user_id=user_id)
    jids = _judgments(res, ["u", "unknown-user"])
    memo = chunk_contexts(res=res, judgment_ids=jids)
    assert [row.id for row, _ in memo.entries.values()] == [built.id]  # the unknown user is left out
    [(found, data)] = memo.entries.values()
    assert data.rationales == built.rationales
    summaries = [run_judgment(res=res, judgment_id=j, token="chunk", contexts=memo) for j in jids]
    assert [s.status for s in summaries] == ["done", "rejected"]
    assert summaries[1].error_code == "unknown_user"
    with session_scope(res.db) as session:
        judged = get_judgment(session=session, judgment_id=jids[0])
    assert judged is not None and judged.context_id == built.id
    assert CountingLite.builds == 1


def test_a_chunk_without_contexts_builds_one_per_user_and_shares_it(res: Resources) -> None:
    _user(res, [(0, 1), (2, 3)])
    jids = _judgments(res, ["u"], prompt="one") + _judgments(res, ["u"], prompt="two")
    memo = chunk_contexts(res=res, judgment_ids=jids)
    assert memo.entries == {}  # nothing built yet
    for j in jids:
        assert run_judgment(res=res, judgment_id=j, token="chunk", contexts=memo).status == "done"
    assert CountingLite.builds == 1 and len(memo.entries) == 1  # built by the first, used by the next


def test_a_new_reference_makes_the_next_chunk_use_a_new_context(res: Resources) -> None:
    user_id = _user(res, [(0, 1)])
    backend = res.backend_for("lite", None)
    old, _ = ensure_context(res=res, backend=backend, user_id=user_id)
    _user(res, [(2, 3)])  # a new reference: the stored context is no longer current
    memo = chunk_contexts(res=res, judgment_ids=_judgments(res, ["u"]))
    assert memo.entries == {}  # the old version is not handed out
    new, _ = ensure_context(res=res, backend=backend, user_id=user_id, memo=memo)
    assert new.id != old.id and new.reference_count == 2
    assert [
        row.id
        for row, _ in chunk_contexts(res=res, judgment_ids=_judgments(res, ["u"], "y")).entries.values()
    ] == [new.id]
