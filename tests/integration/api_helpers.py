"""Helpers for the REST API tests: keys, a keyed client, polling, users with a taste made through the API.

Everything goes through the real stack of `conftest.stack` (Postgres, Redis, SeaweedFS S3, a worker
process); the API itself runs in the test process under FastAPI's TestClient.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import col, select

import api.main
from core.enums import TERMINAL_STATUSES
from models.db import session_scope
from models.keys import create_key, revoke_key
from models.tables import BatchItem, DimensionScore, EndUser, Judgment, ReferencePair, Tenant, UserContext
from models.tenants import grant_prefix
from tasks.runtime import get_db
from tests.integration.conftest import Stack
from tests.integration.helpers import image

JSONL = "application/x-ndjson"


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same database) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


TEST_PREFIX = "s3://pigreward-test/"
"""Where the stack's test images live: granted to every tenant these tests make, unless asked not to."""


def grant(tenant: str, prefix: str) -> None:
    with session_scope(get_db()) as session:
        grant_prefix(session=session, name=tenant, prefix=prefix)


def new_key(tenant: str, name: str = "api-tests", *, prefix: str | None = TEST_PREFIX) -> tuple[int, str]:
    """A fresh API key for `tenant` (created if new, granted `prefix`): (key row id, the key)."""
    with session_scope(get_db()) as session:
        row, key = create_key(session=session, tenant=tenant, name=name)
        if prefix:
            grant_prefix(session=session, name=tenant, prefix=prefix)
        return row.id, key  # type: ignore[return-value]


def revoke(key_id: int) -> None:
    with session_scope(get_db()) as session:
        assert revoke_key(session=session, key_id=key_id) is not None


def make_client(*, raise_server_exceptions: bool = True) -> TestClient:
    """A TestClient over a freshly built app (so it reads the current settings)."""
    return TestClient(api.main.create_app(), raise_server_exceptions=raise_server_exceptions)


class Api:
    """A TestClient bound to one tenant's key (sent as `Authorization: Bearer ...`)."""

    def __init__(self, client: TestClient, key: str, tenant: str, key_id: int) -> None:
        self.client = client
        self.key = key
        self.tenant = tenant
        self.key_id = key_id

    @classmethod
    def for_new_tenant(cls, prefix: str, client: TestClient | None = None) -> Api:
        tenant = unique(prefix)
        key_id, key = new_key(tenant)
        return cls(client or make_client(), key, tenant, key_id)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def ok(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        """The JSON of a request that must answer `expect`."""
        resp = self.request(method, path, **kwargs)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text[:2000]}"
        return resp.json()


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; that value, or a TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached after {timeout}s (last: {str(last)[:2000]})")


def wait_batch(api_: Api, batch_id: int, timeout: float = 180) -> dict[str, Any]:
    """GET /v1/batches/{id} until `finished`; the final batch."""

    def finished() -> dict[str, Any] | None:
        batch = api_.ok("GET", f"/v1/batches/{batch_id}")
        return batch if batch["finished"] else None

    return wait_for(finished, timeout, f"batch {batch_id} finished", interval=0.5)


def wait_judgment(api_: Api, judgment_id: int, timeout: float = 90) -> dict[str, Any]:
    """GET /v1/judgments/{id} until it reaches a terminal status; the final judgment."""

    def terminal() -> dict[str, Any] | None:
        row = api_.ok("GET", f"/v1/judgments/{judgment_id}")
        return row if row["status"] in TERMINAL_STATUSES else None

    return wait_for(terminal, timeout, f"judgment {judgment_id} finished")


def wait_context(api_: Api, user: str, timeout: float = 90) -> dict[str, Any]:
    """GET /v1/users/{user}/context until it answers 200; the context."""

    def ready() -> dict[str, Any] | None:
        resp = api_.get(f"/v1/users/{user}/context")
        assert resp.status_code in (200, 404), resp.text
        return resp.json() if resp.status_code == 200 else None

    return wait_for(ready, timeout, f"context of {user}")


def list_all_judgments(api_: Api, *, page: int = 64, **params: Any) -> list[dict[str, Any]]:
    """Every judgment matching `params`, read page by page with limit/offset."""
    out: list[dict[str, Any]] = []
    while True:
        rows = api_.ok("GET", "/v1/judgments", params={**params, "limit": page, "offset": len(out)})
        assert len(rows) <= page
        out.extend(rows)
        if len(rows) < page:
            return out


_REFERENCE_IMAGES: dict[str, list[tuple[str, str]]] = {}


def reference_images(stack: Stack) -> list[tuple[str, str]]:
    """Six (warm, cool) image pairs in S3 for reference pairs, uploaded once per stack."""
    if stack.s3_endpoint not in _REFERENCE_IMAGES:
        pairs = []
        for i in range(6):
            hot = image(stack, f"api-refs/{i}-hot.png", warmth=0.9, brightness=0.3 + 0.1 * i, seed=i)
            cold = image(stack, f"api-refs/{i}-cold.png", warmth=0.1, brightness=0.8 - 0.1 * i, seed=100 + i)
            pairs.append((hot, cold))
        _REFERENCE_IMAGES[stack.s3_endpoint] = pairs
    return _REFERENCE_IMAGES[stack.s3_endpoint]


def create_user_with_taste(api_: Api, stack: Stack, user: str, *, warm: bool) -> list[dict[str, Any]]:
    """POST /v1/users, then 6 references by s3 URI, each choosing the warmer (or cooler) image."""
    created = api_.ok("POST", "/v1/users", expect=201, json={"external_id": user})
    assert created["external_id"] == user
    refs = []
    for i, (hot, cold) in enumerate(reference_images(stack)):
        chosen, rejected = (hot, cold) if warm else (cold, hot)
        body = {"prompt": f"reference scene {i}", "chosen": chosen, "rejected": rejected}
        refs.append(api_.ok("POST", f"/v1/users/{user}/references", expect=201, json=body))
    return refs


def warmth_images(stack: Stack, prefix: str, n: int = 20) -> list[tuple[str, float]]:
    """`n` distinct images from cool to warm in S3: (uri, warmth)."""
    out = []
    for i in range(n):
        warmth = round(0.02 + 0.96 * i / (n - 1), 3)
        out.append((image(stack, f"{prefix}/{i}.png", warmth=warmth, seed=500 + i), warmth))
    return out


def judgment_spec(user: str, prompt: str, a: str, b: str, **extra: Any) -> dict[str, Any]:
    return {"user": user, "prompt": prompt, "image_a": a, "image_b": b, **extra}


def tenant_id(name: str) -> int:
    with session_scope(get_db()) as session:
        row = session.exec(select(Tenant).where(Tenant.name == name)).one()
        return row.id  # type: ignore[return-value]


def user_rows(tenant: str, external_id: str) -> dict[str, int]:
    """Straight from the database: how many rows of each kind belong to this user of this tenant."""
    tid = tenant_id(tenant)
    with session_scope(get_db()) as session:
        user = session.exec(
            select(EndUser).where(EndUser.tenant_id == tid, EndUser.external_id == external_id)
        ).first()
        mine = sa.and_(col(Judgment.tenant_id) == tid, col(Judgment.user_ref) == external_id)
        if user is not None:
            mine = sa.or_(mine, col(Judgment.user_id) == user.id)
        judgment_ids = list(session.exec(select(Judgment.id).where(mine)))

        def count(stmt: Any) -> int:
            return session.exec(select(sa.func.count()).select_from(stmt.subquery())).one()

        return {
            "users": 0 if user is None else 1,
            "references": 0
            if user is None
            else count(select(ReferencePair.id).where(ReferencePair.user_id == user.id)),
            "contexts": 0
            if user is None
            else count(select(UserContext.id).where(UserContext.user_id == user.id)),
            "judgments": len(judgment_ids),
            "dimension_scores": count(
                select(DimensionScore.id).where(col(DimensionScore.judgment_id).in_(judgment_ids))
            ),
            "batch_items": count(
                select(BatchItem.batch_id).where(col(BatchItem.judgment_id).in_(judgment_ids))
            ),
        }


def judgments_with_uri(tenant: str, uri: str) -> int:
    """Ledger rows of `tenant` that name `uri` as either image (other tests put such URIs in on purpose)."""
    tid = tenant_id(tenant)
    with session_scope(get_db()) as session:
        stmt = select(sa.func.count()).where(
            col(Judgment.tenant_id) == tid,
            sa.or_(col(Judgment.image_a_uri) == uri, col(Judgment.image_b_uri) == uri),
        )
        return session.exec(stmt).one()


def references_with_uri(tenant: str, uri: str) -> int:
    """Reference pairs of `tenant`'s users that name `uri`."""
    tid = tenant_id(tenant)
    with session_scope(get_db()) as session:
        stmt = (
            select(sa.func.count())
            .select_from(ReferencePair)
            .join(EndUser, col(EndUser.id) == col(ReferencePair.user_id))
            .where(
                col(EndUser.tenant_id) == tid,
                sa.or_(col(ReferencePair.chosen_uri) == uri, col(ReferencePair.rejected_uri) == uri),
            )
        )
        return session.exec(stmt).one()


def tenant_judgment_count(tenant: str) -> int:
    tid = tenant_id(tenant)
    with session_scope(get_db()) as session:
        return session.exec(select(sa.func.count()).where(col(Judgment.tenant_id) == tid)).one()


def assert_422(resp: httpx.Response, loc: tuple[Any, ...], msg: str | None = None) -> dict[str, Any]:
    """A 422 whose error list has an entry at `loc` (a prefix of its `loc`) and, if given, with `msg` in it."""
    assert resp.status_code == 422, f"expected 422, got {resp.status_code}: {resp.text[:2000]}"
    detail = resp.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    at = [e for e in detail if tuple(e["loc"][: len(loc)]) == tuple(loc)]
    assert at, f"no error at {loc}: {detail}"
    if msg is not None:
        assert any(msg.lower() in e["msg"].lower() for e in at), f"{msg!r} not in {at}"
    return at[0]
