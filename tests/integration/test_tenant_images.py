"""Tenant-scoped images (issue 12, defect 1): a tenant cannot obtain a single byte of another tenant's
images through any route, with both tenants' objects in the same bucket.

Every route that takes an image URI (judgments, batches, JSONL, references) refuses one outside the
tenant's granted prefixes (403), a tenant with no grant can name nothing but its uploads (fails
closed), and every route that returns or renders pictures (`/ui/images`, `/ui/references`, the
judgment and user pages) serves a picture only if it lies in the tenant's scope today.
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from models.db import session_scope
from models.references import add_reference
from models.tenants import ensure_tenant, revoke_prefix
from models.users import ensure_user
from tasks import judge
from tasks.runtime import get_db
from tests.integration.api_helpers import JSONL, Api, grant, make_client, new_key, unique
from tests.integration.conftest import Stack
from tests.integration.helpers import image, user_who_likes_warm

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(stack: Stack) -> TestClient:
    return make_client(raise_server_exceptions=False)


@pytest.fixture(scope="module")
def tenants(stack: Stack, client: TestClient) -> dict[str, object]:
    """Tenants A and B, each granted its own folder of one bucket, with a judged pair each; and a
    judgment and a reference of B's that name A's objects (recorded by the trusted Python path)."""
    a = Api(client, *_key(unique("img-a")))
    b = Api(client, *_key(unique("img-b")))
    for api_, folder in ((a, "tenant-a"), (b, "tenant-b")):
        grant(api_.tenant, f"s3://pigreward-test/{folder}/")
        user_who_likes_warm(stack, "owner", tenant=api_.tenant)
    a_img = [image(stack, f"tenant-a/secret-{i}.png", warmth=0.8 - 0.6 * i, seed=1300 + i) for i in range(2)]
    b_img = [image(stack, f"tenant-b/own-{i}.png", warmth=0.8 - 0.6 * i, seed=1310 + i) for i in range(2)]
    b_own = judge.delay("owner", "b's own pair", *b_img, None, b.tenant).get(timeout=120)
    b_peek = judge.delay("owner", "peek", *a_img, None, b.tenant).get(timeout=120)
    with session_scope(get_db()) as session:
        tenant_b = ensure_tenant(session=session, name=b.tenant)
        user = ensure_user(session=session, tenant_id=tenant_b.id, external_id="owner")  # type: ignore[arg-type]
        peek_ref = add_reference(
            session=session,
            user_id=user.id,
            prompt="peek",
            chosen_uri=a_img[0],
            rejected_uri=a_img[1],  # type: ignore[arg-type]
        )
        peek_ref_id = peek_ref.id
    return {
        "a": a,
        "b": b,
        "a_img": a_img,
        "b_img": b_img,
        "own": b_own,
        "peek": b_peek,
        "peek_ref": peek_ref_id,
    }


def _key(tenant: str) -> tuple[str, str, int]:

    key_id, key = new_key(tenant, prefix=None)
    return key, tenant, key_id


def _judgment(uri_a: str, uri_b: str, user: str = "owner") -> dict[str, str]:
    return {"user": user, "prompt": "peek", "image_a": uri_a, "image_b": uri_b}


def test_no_route_takes_another_tenants_image(tenants: dict[str, object]) -> None:
    b: Api = tenants["b"]  # type: ignore[assignment]
    a_img: list[str] = tenants["a_img"]  # type: ignore[assignment]
    b_img: list[str] = tenants["b_img"]  # type: ignore[assignment]
    tricks = [
        a_img[0],
        "s3://pigreward-test/tenant-b/../tenant-a/secret-0.png",
        "s3://pigreward-test/tenant-b/./../tenant-a/secret-0.png",
        "s3://pigreward-test/tenant-bx/secret-0.png",  # a longer folder name sharing the prefix
        "s3://pigreward-test//tenant-b/x.png",
        "s3://other-bucket/tenant-b/own-0.png",
    ]
    for uri in tricks:
        body = _judgment(uri, b_img[1])
        answers = {
            "judgment": b.post("/v1/judgments", json=body),
            "batch": b.post("/v1/batches", json={"items": [body]}),
            "jsonl": b.post(
                "/v1/batches/jsonl", content=json.dumps(body).encode(), headers={"content-type": JSONL}
            ),
            "reference": b.post(
                "/v1/users/owner/references", json={"prompt": "p", "chosen": uri, "rejected": b_img[1]}
            ),
        }
        for route, resp in answers.items():
            assert resp.status_code in (403, 422), (uri, route, resp.status_code, resp.text[:300])
            assert "secret" not in resp.text or resp.status_code == 403, resp.text


def test_a_tenant_without_grants_can_name_nothing_but_its_uploads(
    tenants: dict[str, object], client: TestClient
) -> None:
    fresh = Api(client, *_key(unique("img-none")))
    fresh.ok("POST", "/v1/users", expect=201, json={"external_id": "owner"})
    b_img: list[str] = tenants["b_img"]  # type: ignore[assignment]
    resp = fresh.post("/v1/judgments", json=_judgment(*b_img))
    assert resp.status_code == 403 and "outside this tenant's image prefixes" in resp.text, resp.text
    up = fresh.post(
        "/v1/users/owner/references/upload",
        data={"prompt": "mine"},
        files={
            "chosen": ("c.png", _png_of(client, tenants, "own", "a"), "image/png"),
            "rejected": ("r.png", _png_of(client, tenants, "own", "b"), "image/png"),
        },
    )
    assert up.status_code == 201, up.text
    ref = up.json()
    assert f"uploads/{_tenant_id(fresh.tenant)}/" in ref["chosen"], ref
    ok = fresh.post("/v1/judgments", json=_judgment(ref["chosen"], ref["rejected"]))
    assert ok.status_code == 202, ok.text
    # and another tenant cannot name that upload
    b: Api = tenants["b"]  # type: ignore[assignment]
    stolen = b.post("/v1/judgments", json=_judgment(ref["chosen"], ref["rejected"]))
    assert stolen.status_code == 403, stolen.text


def _png_of(client: TestClient, tenants: dict[str, object], which: str, side: str) -> bytes:
    b: Api = tenants["b"]  # type: ignore[assignment]
    resp = client.get(f"/ui/images/{tenants[which]['judgment_id']}/{side}", cookies={"pigreward_key": b.key})  # type: ignore[index]
    assert resp.status_code == 200 and resp.content.startswith(PNG), resp.text[:300]
    return resp.content


def _tenant_id(name: str) -> int:
    with session_scope(get_db()) as session:
        tid = ensure_tenant(session=session, name=name).id
    assert tid is not None
    return tid


def test_the_viewer_serves_only_pictures_in_the_tenants_scope(
    tenants: dict[str, object], client: TestClient
) -> None:
    a: Api = tenants["a"]  # type: ignore[assignment]
    b: Api = tenants["b"]  # type: ignore[assignment]
    own, peek = tenants["own"]["judgment_id"], tenants["peek"]["judgment_id"]  # type: ignore[index]
    cookie = {"pigreward_key": b.key}
    for side in ("a", "b"):
        assert client.get(f"/ui/images/{own}/{side}", cookies=cookie).content.startswith(PNG)
        leaked = client.get(f"/ui/images/{peek}/{side}", cookies=cookie)
        assert leaked.status_code == 404 and not leaked.content.startswith(PNG)
        foreign = client.get(f"/ui/images/{own}/{side}", cookies={"pigreward_key": a.key})
        assert foreign.status_code == 404 and not foreign.content.startswith(PNG)
    for which in ("chosen", "rejected"):
        leaked = client.get(f"/ui/references/{tenants['peek_ref']}/{which}", cookies=cookie)
        assert leaked.status_code == 404 and not leaked.content.startswith(PNG)
    pages = [f"/ui/judgments/{peek}", "/ui/users/owner"]
    for page in pages:
        html = client.get(page, cookies=cookie)
        assert html.status_code == 200
        for src in _image_sources(html.text):
            if f"/ui/images/{peek}/" in src or f"/ui/references/{tenants['peek_ref']}/" in src:
                assert not client.get(src, cookies=cookie).content.startswith(PNG), src


def test_a_grant_taken_back_hides_its_pictures(tenants: dict[str, object], client: TestClient) -> None:
    b: Api = tenants["b"]  # type: ignore[assignment]
    own = tenants["own"]["judgment_id"]  # type: ignore[index]
    with session_scope(get_db()) as session:
        revoke_prefix(session=session, name=b.tenant, prefix="s3://pigreward-test/tenant-b/")
    try:
        resp = client.get(f"/ui/images/{own}/a", cookies={"pigreward_key": b.key})
        assert resp.status_code == 404
    finally:
        grant(b.tenant, "s3://pigreward-test/tenant-b/")
    assert client.get(f"/ui/images/{own}/a", cookies={"pigreward_key": b.key}).status_code == 200


def _image_sources(html: str) -> list[str]:
    return re.findall(r'src="(/ui/[^"]+)"', html)
