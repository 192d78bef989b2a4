"""Batches through the REST API on the real stack: JSON Lines and JSON submits, progress, results, cancel."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import reset_settings
from tests.integration.api_helpers import (
    JSONL,
    Api,
    assert_422,
    create_user_with_taste,
    judgment_spec,
    list_all_judgments,
    make_client,
    tenant_judgment_count,
    wait_batch,
    warmth_images,
)
from tests.integration.conftest import Stack

WARM, COOL = "likes-warm", "likes-cool"


@dataclass
class BatchWorld:
    api: Api
    images: list[tuple[str, float]]  # (uri, warmth), cool to warm


@pytest.fixture(scope="module")
def client(stack: Stack) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def bw(stack: Stack, client: TestClient) -> BatchWorld:
    """One tenant with two users of opposite taste (made through the API) and 20 distinct images."""
    api_ = Api.for_new_tenant("batches", client)
    create_user_with_taste(api_, stack, WARM, warm=True)
    create_user_with_taste(api_, stack, COOL, warm=False)
    return BatchWorld(api_, warmth_images(stack, "api-batch", 20))


def _rows(bw: BatchWorld, n: int, *, seed: int, prefix: str, min_gap: float = 0.0) -> list[dict[str, Any]]:
    """`n` distinct judgment requests alternating the two users over random pairs of the images."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        i, j = rng.sample(range(len(bw.images)), 2)
        if abs(bw.images[i][1] - bw.images[j][1]) < min_gap:
            continue
        user = WARM if len(rows) % 2 == 0 else COOL
        rows.append(judgment_spec(user, f"{prefix} scene {len(rows)}", bw.images[i][0], bw.images[j][0]))
    return rows


@pytest.mark.slow  # 200 judgments through the API and a worker
def test_jsonl_batch_of_200_rows_end_to_end(bw: BatchWorld) -> None:
    api_ = bw.api
    rows = _rows(bw, 200, seed=7, prefix="nightly", min_gap=0.3)
    assert len({r["image_a"] for r in rows} | {r["image_b"] for r in rows}) == 20
    lines = [json.dumps(r) for r in rows]
    lines.insert(100, "")  # blank lines are ignored
    body = ("\r\n".join(lines[:50]) + "\n" + "\n".join(lines[50:]) + "\n").encode()

    started = time.monotonic()
    created = api_.ok(
        "POST",
        "/v1/batches/jsonl",
        expect=202,
        params={"name": "nightly-200"},
        content=body,
        headers={"content-type": JSONL},
    )
    assert created["total"] == 200 and isinstance(created["id"], int)
    progress = api_.ok("GET", f"/v1/batches/{created['id']}")
    assert progress["name"] == "nightly-200" and progress["total"] == 200
    assert sum(progress["counts"].values()) == 200 and progress["cancelled"] is False

    batch = wait_batch(api_, created["id"], timeout=180)
    assert batch["counts"] == {"done": 200}, batch
    assert batch["finished"] is True and batch["cancelled"] is False
    assert time.monotonic() - started < 180

    # every result, read page by page
    results = list_all_judgments(api_, page=64, batch_id=created["id"])
    assert len(results) == 200
    ids = [r["id"] for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 200
    assert list_all_judgments(api_, page=1000, batch_id=created["id"]) == results
    assert (
        api_.ok("GET", "/v1/judgments", params={"batch_id": created["id"], "status": "done", "limit": 1000})
        == results
    )
    assert api_.ok("GET", "/v1/judgments", params={"batch_id": created["id"], "status": "queued"}) == []
    asked = {(r["user"], r["prompt"]): r for r in rows}
    assert {(r["user"], r["prompt"]) for r in results} == set(asked)
    warmth = dict(bw.images)
    favoured_warmer = {WARM: [], COOL: []}  # type: dict[str, list[bool]]
    for r in results:
        req = asked[(r["user"], r["prompt"])]
        assert (r["image_a"], r["image_b"]) == (req["image_a"], req["image_b"])
        assert r["status"] == "done" and r["batch_id"] == created["id"], r
        assert 3 <= len(r["dimensions"]) <= 5, r
        assert all(d["name"] and d["reason"] for d in r["dimensions"])
        assert r["winner"] in ("A", "B", "tie")
        assert abs(sum(d["score_a"] for d in r["dimensions"]) - r["total_a"]) < 0.05
        assert abs(sum(d["score_b"] for d in r["dimensions"]) - r["total_b"]) < 0.05
        if r["winner"] != "tie":
            warmer = "A" if warmth[r["image_a"]] > warmth[r["image_b"]] else "B"
            favoured_warmer[r["user"]].append(r["winner"] == warmer)

    # a sample read one by one gives the same thing as the list
    for r in random.Random(1).sample(results, 12):
        assert api_.ok("GET", f"/v1/judgments/{r['id']}") == r

    warm_rate = sum(favoured_warmer[WARM]) / 100
    cool_rate = sum(favoured_warmer[COOL]) / 100
    assert warm_rate >= 0.75, f"the warm-liking user chose the warmer image in only {warm_rate:.0%}"
    assert cool_rate <= 0.25, f"the cool-liking user chose the warmer image in {cool_rate:.0%}"


def test_json_batch_small(bw: BatchWorld) -> None:
    api_ = bw.api
    items = _rows(bw, 6, seed=11, prefix="small")
    items[1]["swap"] = True  # options per item
    created = api_.ok("POST", "/v1/batches", expect=202, json={"name": "small-json", "items": items})
    assert created["name"] == "small-json" and created["total"] == 6 and created["cancelled"] is False
    assert sum(created["counts"].values()) == 6
    assert set(created["counts"]) <= {"queued", "running", "done"}

    batch = wait_batch(api_, created["id"], timeout=90)
    assert batch["counts"] == {"done": 6} and batch["finished"] is True
    results = api_.ok("GET", "/v1/judgments", params={"batch_id": created["id"]})
    assert sorted(r["prompt"] for r in results) == sorted(i["prompt"] for i in items)
    swapped = [r for r in results if r["prompt"] == items[1]["prompt"]]
    assert swapped[0]["swap"] is True and len(swapped[0]["raw_outputs"]) >= 1
    assert all(r["swap"] is False for r in results if r["prompt"] != items[1]["prompt"])

    # the default name
    unnamed = api_.ok("POST", "/v1/batches", expect=202, json={"items": items[:1]})
    assert unnamed["name"] == "batch"
    jsonl = api_.ok(
        "POST", "/v1/batches/jsonl", expect=202, content=json.dumps(items[0]), headers={"content-type": JSONL}
    )
    assert api_.ok("GET", f"/v1/batches/{jsonl['id']}")["name"] == "batch"


@pytest.mark.slow  # a big batch submitted and cancelled
def test_cancel_right_after_submitting_a_big_batch(bw: BatchWorld) -> None:
    api_ = bw.api
    n = 1500
    items = _rows(bw, n, seed=23, prefix="big")
    created = api_.ok("POST", "/v1/batches", expect=202, json={"name": "big", "items": items})
    cancelled = api_.ok("POST", f"/v1/batches/{created['id']}/cancel")
    assert cancelled["id"] == created["id"] and cancelled["cancelled"] is True
    assert cancelled["total"] == n and sum(cancelled["counts"].values()) == n, cancelled
    assert "queued" not in cancelled["counts"], cancelled
    assert set(cancelled["counts"]) <= {"cancelled", "running", "done"}, cancelled
    assert cancelled["counts"].get("cancelled", 0) > 0, cancelled

    final = wait_batch(api_, created["id"], timeout=120)
    assert final["cancelled"] is True and final["finished"] is True
    assert set(final["counts"]) <= {"cancelled", "done"}, final
    assert sum(final["counts"].values()) == n
    assert final["counts"]["cancelled"] == cancelled["counts"]["cancelled"], (cancelled, final)

    # nothing stuck, and the cancelled rows stay cancelled (no worker runs them later)
    for status in ("queued", "running"):
        assert api_.ok("GET", "/v1/judgments", params={"batch_id": created["id"], "status": status}) == []
    rows = list_all_judgments(api_, page=1000, batch_id=created["id"], status="cancelled")
    assert len(rows) == final["counts"]["cancelled"]
    assert all(r["error_code"] == "cancelled" and r["dimensions"] == [] and r["winner"] is None for r in rows)
    time.sleep(1.5)
    assert api_.ok("GET", f"/v1/batches/{created['id']}")["counts"] == final["counts"]
    again = api_.ok("POST", f"/v1/batches/{created['id']}/cancel")  # cancelling twice is harmless
    assert again["counts"] == final["counts"] and again["cancelled"] is True


@pytest.mark.parametrize("name", ["n" * 201, ""], ids=["over-200", "empty"])
def test_jsonl_batch_name_is_validated_like_the_json_form(bw: BatchWorld, name: str) -> None:
    """`POST /v1/batches` limits `name` to 1..200 characters; the JSON Lines form must too.

    Today the JSONL `name` query parameter is unconstrained: 201 characters reach the
    varchar(200) column and the request fails with a 500 (DataError); an empty name is stored.
    """
    raw = make_client(raise_server_exceptions=False)
    before = tenant_judgment_count(bw.api.tenant)
    line = json.dumps(_rows(bw, 1, seed=99, prefix=f"named-{len(name)}")[0])
    resp = raw.post(
        "/v1/batches/jsonl",
        params={"name": name},
        content=line.encode(),
        headers={**bw.api.headers, "content-type": JSONL},
    )
    assert_422(resp, ("query", "name"))
    assert tenant_judgment_count(bw.api.tenant) == before


@pytest.fixture
def max_batch_3(stack: Stack) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIGREWARD_API_MAX_BATCH", "3")
        reset_settings()
        try:
            yield make_client()
        finally:
            mp.delenv("PIGREWARD_API_MAX_BATCH")
            reset_settings()


def test_batches_over_the_configured_size_are_413(bw: BatchWorld, max_batch_3: TestClient) -> None:
    headers = bw.api.headers
    before = tenant_judgment_count(bw.api.tenant)
    items = _rows(bw, 4, seed=5, prefix="too-many")
    resp = max_batch_3.post("/v1/batches", json={"items": items}, headers=headers)
    assert resp.status_code == 413 and resp.json() == {"detail": "a batch holds at most 3 judgments"}
    body = "\n".join(json.dumps(i) for i in items).encode()
    resp = max_batch_3.post("/v1/batches/jsonl", content=body, headers={**headers, "content-type": JSONL})
    assert resp.status_code == 413 and resp.json() == {"detail": "a batch holds at most 3 judgments"}
    assert tenant_judgment_count(bw.api.tenant) == before
    resp = max_batch_3.post("/v1/batches", json={"items": items[:3]}, headers=headers)
    assert resp.status_code == 202 and resp.json()["total"] == 3


def test_batch_page_shows_why_each_row_did_not_finish(bw: BatchWorld, stack: Stack) -> None:
    """The viewer's batch page names the error code (or invalid reason) of each row that has one."""
    good = _rows(bw, 1, seed=31, prefix="why")[0]
    missing = {**good, "prompt": "why missing", "image_b": good["image_b"].replace(".png", "-gone.png")}
    created = bw.api.ok("POST", "/v1/batches", expect=202, json={"name": "why", "items": [good, missing]})
    batch = wait_batch(bw.api, created["id"], timeout=90)
    assert batch["counts"] == {"done": 1, "rejected": 1}, batch
    [rejected] = [
        r for r in bw.api.ok("GET", "/v1/judgments", params={"batch_id": created["id"]}) if r["error_code"]
    ]
    page = bw.api.client.get(f"/ui/batches/{created['id']}", cookies={"pigreward_key": bw.api.key})
    assert page.status_code == 200
    assert f"<code>{rejected['error_code']}</code>" in page.text and "<th>Why</th>" in page.text
