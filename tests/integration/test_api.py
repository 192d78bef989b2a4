"""The REST API on the real stack: keys, tenants, validation, refused locations, users and their data.

The API runs in the test process (FastAPI TestClient); the judgments it queues run in the stack's
worker process (Redis broker, Postgres ledger, SeaweedFS S3, the `lite` backend).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import reset_settings
from tasks.runtime import get_db
from tests.integration.api_helpers import (
    JSONL,
    Api,
    assert_422,
    create_user_with_taste,
    judgment_spec,
    judgments_with_uri,
    make_client,
    new_key,
    references_with_uri,
    revoke,
    tenant_judgment_count,
    unique,
    user_rows,
    wait_batch,
    wait_context,
    wait_judgment,
)
from tests.integration.conftest import Stack, png_bytes
from tests.integration.helpers import image
from workers.drawing import DrawParams, draw_image

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def client(stack: Stack) -> TestClient:
    return make_client()


@dataclass
class World:
    """Tenant A with a user who has references, a context, a judgment and a batch; tenant B empty."""

    a: Api
    b: Api
    user: str
    judgment_id: int
    batch_id: int
    warm: str
    cold: str


@pytest.fixture(scope="module")
def world(stack: Stack, client: TestClient) -> World:
    a = Api.for_new_tenant("tenant-a", client)
    b = Api.for_new_tenant("tenant-b", client)
    user = "alice"
    create_user_with_taste(a, stack, user, warm=True)
    a.ok("POST", f"/v1/users/{user}/context", expect=202)
    warm = image(stack, "api-world/warm.png", warmth=0.95, seed=901)
    cold = image(stack, "api-world/cold.png", warmth=0.05, seed=902)
    judgment = a.ok("POST", "/v1/judgments", expect=202, json=judgment_spec(user, "a beach", warm, cold))
    batch = a.ok(
        "POST",
        "/v1/batches",
        expect=202,
        json={"name": "world", "items": [judgment_spec(user, "a forest", cold, warm)]},
    )
    wait_context(a, user)
    return World(a, b, user, judgment["id"], batch["id"], warm, cold)


# ---------------------------------------------------------------------------------------------
# health and schema


def test_healthz_readyz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "database": "ok", "broker": "ok"}

    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path, methods in {
        "/v1/users": {"get", "post"},
        "/v1/users/{external_id}": {"get", "delete"},
        "/v1/users/{external_id}/references": {"get", "post"},
        "/v1/users/{external_id}/references/upload": {"post"},
        "/v1/users/{external_id}/context": {"get", "post"},
        "/v1/judgments": {"get", "post"},
        "/v1/judgments/{judgment_id}": {"get"},
        "/v1/batches": {"post"},
        "/v1/batches/jsonl": {"post"},
        "/v1/batches/{batch_id}": {"get"},
        "/v1/batches/{batch_id}/cancel": {"post"},
    }.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    assert JSONL in paths["/v1/batches/jsonl"]["post"]["requestBody"]["content"]


# ---------------------------------------------------------------------------------------------
# keys


ENDPOINTS = [
    ("GET", "/v1/users"),
    ("POST", "/v1/users"),
    ("GET", "/v1/users/alice"),
    ("DELETE", "/v1/users/alice"),
    ("GET", "/v1/users/alice/references"),
    ("POST", "/v1/users/alice/references"),
    ("POST", "/v1/users/alice/references/upload"),
    ("GET", "/v1/users/alice/context"),
    ("POST", "/v1/users/alice/context"),
    ("GET", "/v1/judgments"),
    ("POST", "/v1/judgments"),
    ("GET", "/v1/judgments/1"),
    ("POST", "/v1/batches"),
    ("POST", "/v1/batches/jsonl"),
    ("GET", "/v1/batches/1"),
    ("POST", "/v1/batches/1/cancel"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
def test_every_v1_endpoint_needs_a_key(client: TestClient, method: str, path: str) -> None:
    resp = client.request(method, path)
    assert resp.status_code == 401, resp.text
    assert resp.json() == {"detail": "missing API key"}
    assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer pgr_",
        "Bearer pgr_0123456789ab",
        "Bearer pgr_0123456789ab_not-a-real-secret",
        "Bearer xyz_0123456789ab_secret",
        "Bearer " + "pgr_" + "a" * 5000,
    ],
    ids=["garbage", "prefix-only", "no-secret", "unknown-prefix", "wrong-scheme-prefix", "huge"],
)
def test_malformed_keys_are_401_invalid(client: TestClient, authorization: str) -> None:
    resp = client.get("/v1/users", headers={"Authorization": authorization})
    assert resp.status_code == 401, resp.text
    assert resp.json() == {"detail": "invalid API key"}


def test_key_with_a_tampered_secret_is_401(stack: Stack, client: TestClient) -> None:
    _, key = new_key(unique("tamper"))
    head, _, secret = key.rpartition("_")
    forged = f"{head}_{secret[::-1]}" if secret[::-1] != secret else f"{head}_x{secret}"
    resp = client.get("/v1/users", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status_code == 401
    assert resp.json() == {"detail": "invalid API key"}
    assert client.get("/v1/users", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_empty_or_non_bearer_authorization_is_401_missing(client: TestClient) -> None:
    for header in ("", "Bearer", "Basic dXNlcjpwYXNz"):
        resp = client.get("/v1/users", headers={"Authorization": header})
        assert resp.status_code == 401, (header, resp.text)
        assert resp.json() == {"detail": "missing API key"}, header


def test_revoked_key_is_401_and_other_keys_of_the_tenant_still_work(stack: Stack, client: TestClient) -> None:
    api_ = Api.for_new_tenant("revoke", client)
    _, other_key = new_key(api_.tenant, name="second")
    api_.ok("POST", "/v1/users", expect=201, json={"external_id": "bob"})
    assert api_.ok("GET", "/v1/users")[0]["external_id"] == "bob"
    # the key is also accepted as X-API-Key
    assert client.get("/v1/users/bob", headers={"X-API-Key": api_.key}).status_code == 200

    revoke(api_.key_id)
    for resp in (
        api_.get("/v1/users"),
        api_.get("/v1/users/bob"),
        api_.post("/v1/users", json={"external_id": "carol"}),
        client.get("/v1/users", headers={"X-API-Key": api_.key}),
    ):
        assert resp.status_code == 401, resp.text
        assert resp.json() == {"detail": "invalid API key"}
    resp = client.get("/v1/users", headers={"Authorization": f"Bearer {other_key}"})
    assert resp.status_code == 200
    assert [u["external_id"] for u in resp.json()] == ["bob"]  # carol was never created


# ---------------------------------------------------------------------------------------------
# tenants


def test_other_tenants_data_is_404(world: World) -> None:
    a, b, user = world.a, world.b, world.user
    assert a.ok("GET", f"/v1/judgments/{world.judgment_id}")["user"] == user
    assert a.ok("GET", f"/v1/batches/{world.batch_id}")["total"] == 1

    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("GET", f"/v1/judgments/{world.judgment_id}", {}, "judgment not found"),
        ("GET", f"/v1/batches/{world.batch_id}", {}, "batch not found"),
        ("POST", f"/v1/batches/{world.batch_id}/cancel", {}, "batch not found"),
        ("GET", f"/v1/users/{user}", {}, "user not found"),
        ("GET", f"/v1/users/{user}/references", {}, "user not found"),
        (
            "POST",
            f"/v1/users/{user}/references",
            {"json": {"prompt": "p", "chosen": world.warm, "rejected": world.cold}},
            "user not found",
        ),
        ("GET", f"/v1/users/{user}/context", {}, "user not found"),
        ("POST", f"/v1/users/{user}/context", {}, "user not found"),
        ("DELETE", f"/v1/users/{user}", {}, "user not found"),
    ]
    for method, path, kwargs, detail in cases:
        resp = b.request(method, path, **kwargs)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json() == {"detail": detail}, (method, path)

    # listings are scoped to the caller's tenant
    assert b.ok("GET", "/v1/users") == []
    assert b.ok("GET", "/v1/judgments", params={"user": user}) == []
    assert b.ok("GET", "/v1/judgments", params={"batch_id": world.batch_id}) == []
    seen_by_b = {r["id"] for r in b.ok("GET", "/v1/judgments", params={"limit": 1000})}
    assert world.judgment_id not in seen_by_b

    # and nothing of A changed: user, references, context, batch not cancelled
    kept = a.ok("GET", f"/v1/users/{user}")
    assert kept["references"] == 6 and kept["contexts"] >= 1
    assert a.ok("GET", f"/v1/batches/{world.batch_id}")["cancelled"] is False
    assert len(a.ok("GET", f"/v1/users/{user}/references")) == 6


def test_judging_another_tenants_user_is_unknown_user(world: World) -> None:
    """Tenant B naming A's user gets B's (unknown) user: rejected, A's taste is never used."""
    row = world.b.ok(
        "POST", "/v1/judgments", expect=202, json=judgment_spec(world.user, "x", world.warm, world.cold)
    )
    assert row["id"] != world.judgment_id
    done = wait_judgment(world.b, row["id"])
    assert done["status"] == "rejected" and done["error_code"] == "unknown_user", done
    assert done["dimensions"] == [] and done["winner"] is None
    # A's own identical request is a different judgment, judged with A's user
    mine = wait_judgment(world.a, world.judgment_id)
    assert mine["status"] == "done" and mine["winner"] == "A", mine


# ---------------------------------------------------------------------------------------------
# validation


GOOD = judgment_spec("v-user", "a lighthouse", "s3://pigreward-test/a.png", "s3://pigreward-test/b.png")
GOOD_REF = {"prompt": "a lighthouse", "chosen": GOOD["image_a"], "rejected": GOOD["image_b"]}


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _jsonl(*lines: str) -> dict[str, Any]:
    return {"content": "\n".join(lines).encode(), "headers": {"content-type": JSONL}}


_LINE = '{"user": "v-user", "prompt": "p%d", "image_a": "s3://pigreward-test/a.png", "image_b": "s3://pigreward-test/b.png"}'

MALFORMED: list[tuple[str, str, str, dict[str, Any], tuple[Any, ...], str | None]] = [
    # (id, method, path, request kwargs, loc of the error, fragment of its message)
    ("missing-user", "POST", "/v1/judgments", {"json": _without(GOOD, "user")}, ("body", "user"), "required"),
    ("empty-prompt", "POST", "/v1/judgments", {"json": {**GOOD, "prompt": ""}}, ("body", "prompt"), "empty"),
    (
        "whitespace-prompt",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "prompt": " \t\n "}},
        ("body", "prompt"),
        "empty",
    ),
    (
        "prompt-over-limit",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "prompt": "x" * 2001}},
        ("body", "prompt"),
        "2000",
    ),
    (
        "user-bad-characters",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "user": "alice smith"}},
        ("body", "user"),
        "pattern",
    ),
    (
        "external-id-bad-characters",
        "POST",
        "/v1/users",
        {"json": {"external_id": "bob/../admin"}},
        ("body", "external_id"),
        "pattern",
    ),
    (
        "external-id-over-200",
        "POST",
        "/v1/users",
        {"json": {"external_id": "u" * 201}},
        ("body", "external_id"),
        "200",
    ),
    ("external-id-empty", "POST", "/v1/users", {"json": {"external_id": ""}}, ("body", "external_id"), None),
    (
        "image-a-missing",
        "POST",
        "/v1/judgments",
        {"json": _without(GOOD, "image_a")},
        ("body", "image_a"),
        "required",
    ),
    (
        "image-b-null",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "image_b": None}},
        ("body", "image_b"),
        "string",
    ),
    (
        "image-uri-over-2048",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "image_a": "s3://pigreward-test/" + "k" * 2100}},
        ("body", "image_a"),
        "2048",
    ),
    (
        "unknown-backend",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "backend": "gpt-vision"}},
        ("body", "backend"),
        "lite",
    ),
    (
        "unknown-protocol",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "protocol": "xml-v9"}},
        ("body", "protocol"),
        "pigreward-v1",
    ),
    (
        "swap-not-a-bool",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "swap": "sometimes"}},
        ("body", "swap"),
        "boolean",
    ),
    (
        "swap-a-list",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "swap": [True]}},
        ("body", "swap"),
        "boolean",
    ),
    (
        "extra-unknown-field",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "priority": "high"}},
        ("body", "priority"),
        "extra",
    ),
    ("body-not-an-object", "POST", "/v1/judgments", {"json": [GOOD]}, ("body",), None),
    (
        "s3-bucket-only",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "image_a": "s3://pigreward-test"}},
        ("body", "image_a"),
        "s3://bucket/key",
    ),
    (
        "s3-empty-bucket",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "image_b": "s3:///a.png"}},
        ("body", "image_b"),
        "s3://bucket/key",
    ),
    (
        "s3-empty-key",
        "POST",
        "/v1/judgments",
        {"json": {**GOOD, "image_b": "s3://pigreward-test/"}},
        ("body", "image_b"),
        "s3://bucket/key",
    ),
    ("batch-items-empty", "POST", "/v1/batches", {"json": {"items": []}}, ("body", "items"), "at least 1"),
    ("batch-items-missing", "POST", "/v1/batches", {"json": {"name": "n"}}, ("body", "items"), "required"),
    (
        "batch-item-bad-uri",
        "POST",
        "/v1/batches",
        {"json": {"items": [GOOD, {**GOOD, "image_b": "s3://only-a-bucket"}]}},
        ("body", "items", 1, "image_b"),
        "s3://bucket/key",
    ),
    (
        "batch-name-over-200",
        "POST",
        "/v1/batches",
        {"json": {"name": "n" * 201, "items": [GOOD]}},
        ("body", "name"),
        "200",
    ),
    (
        "batch-extra-field",
        "POST",
        "/v1/batches",
        {"json": {"items": [GOOD], "priority": 1}},
        ("body", "priority"),
        "extra",
    ),
    (
        "jsonl-bad-line",
        "POST",
        "/v1/batches/jsonl",
        _jsonl(
            _LINE % 1, _LINE % 2, '{"user": "v-user", "image_a": "s3://b/a.png", "image_b": "s3://b/b.png"}'
        ),
        ("body", "line 3", "prompt"),
        "required",
    ),
    (
        "jsonl-bad-uri-on-line-2",
        "POST",
        "/v1/batches/jsonl",
        _jsonl(_LINE % 1, (_LINE % 2).replace("s3://pigreward-test/b.png", "http://169.254.169.254/x")),
        ("body", "line 2", "image_b"),
        "scheme",
    ),
    (
        "jsonl-line-not-json",
        "POST",
        "/v1/batches/jsonl",
        _jsonl(_LINE % 1, "{not json at all", _LINE % 3),
        ("body", "line 2"),
        "not JSON",
    ),
    (
        "jsonl-line-not-an-object",
        "POST",
        "/v1/batches/jsonl",
        _jsonl(_LINE % 1, "", '["a", "list"]'),
        ("body", "line 3"),
        None,
    ),
    ("jsonl-empty", "POST", "/v1/batches/jsonl", _jsonl("", "  ", ""), ("body",), "no judgments"),
    (
        "reference-empty-prompt",
        "POST",
        "/v1/users/v-user/references",
        {"json": {**GOOD_REF, "prompt": "   "}},
        ("body", "prompt"),
        "empty",
    ),
    (
        "reference-chosen-plain-name",
        "POST",
        "/v1/users/v-user/references",
        {"json": {**GOOD_REF, "chosen": "chosen.png"}},
        ("body", "chosen"),
        "scheme",
    ),
    (
        "reference-rejected-missing",
        "POST",
        "/v1/users/v-user/references",
        {"json": _without(GOOD_REF, "rejected")},
        ("body", "rejected"),
        "required",
    ),
    (
        "context-unknown-backend",
        "POST",
        "/v1/users/v-user/context",
        {"json": {"backend": "nope"}},
        ("body", "backend"),
        None,
    ),
    (
        "upload-prompt-whitespace",
        "POST",
        "/v1/users/v-user/references/upload",
        {
            "data": {"prompt": "  "},
            "files": {"chosen": ("c.png", b"x", "image/png"), "rejected": ("r.png", b"y", "image/png")},
        },
        ("body", "prompt"),
        "empty",
    ),
    (
        "upload-file-missing",
        "POST",
        "/v1/users/v-user/references/upload",
        {"data": {"prompt": "p"}, "files": {"chosen": ("c.png", b"x", "image/png")}},
        ("body", "rejected"),
        "required",
    ),
    ("list-limit-0", "GET", "/v1/judgments", {"params": {"limit": 0}}, ("query", "limit"), "1"),
    ("list-limit-5000", "GET", "/v1/judgments", {"params": {"limit": 5000}}, ("query", "limit"), "1000"),
    ("list-offset-negative", "GET", "/v1/judgments", {"params": {"offset": -1}}, ("query", "offset"), None),
    (
        "list-status-unknown",
        "GET",
        "/v1/judgments",
        {"params": {"status": "unknown"}},
        ("query", "status"),
        None,
    ),
    (
        "list-batch-id-text",
        "GET",
        "/v1/judgments",
        {"params": {"batch_id": "abc"}},
        ("query", "batch_id"),
        None,
    ),
    ("judgment-id-text", "GET", "/v1/judgments/abc", {}, ("path", "judgment_id"), "integer"),
    ("user-path-bad-characters", "GET", "/v1/users/bad id", {}, ("path", "external_id"), "pattern"),
]


@pytest.fixture(scope="module")
def validator(stack: Stack, client: TestClient) -> Api:
    api_ = Api.for_new_tenant("validation", client)
    api_.ok("POST", "/v1/users", expect=201, json={"external_id": "v-user"})
    return api_


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "loc", "msg"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_are_422_naming_the_field(
    validator: Api, method: str, path: str, kwargs: dict[str, Any], loc: tuple[Any, ...], msg: str | None
) -> None:
    before = tenant_judgment_count(validator.tenant)
    resp = validator.request(method, path, **kwargs)
    assert_422(resp, loc, msg)
    assert tenant_judgment_count(validator.tenant) == before  # nothing was recorded or queued


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 15
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


def test_jsonl_errors_name_every_bad_line(validator: Api) -> None:
    resp = validator.post(
        "/v1/batches/jsonl", **_jsonl(_LINE % 1, "nope", _LINE % 3, '{"user": "v-user"}', _LINE % 5)
    )
    assert resp.status_code == 422
    lines = {e["loc"][1] for e in resp.json()["detail"]}
    assert lines == {"line 2", "line 4"}, resp.json()


# ---------------------------------------------------------------------------------------------
# locations the workers must never be asked to fetch


SSRF_URIS = [
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "HTTP://169.254.169.254/latest/meta-data",
    "https://example.com/a.png",
    "ftp://x/y",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "dict://127.0.0.1:6379/info",
    "file:///etc/passwd",
    "file://../../etc/passwd",
    "file://localhost/etc/passwd",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    "/etc/passwd",
    "../../etc/passwd",
    "a.png",
    "\\\\evil-host\\share\\a.png",
]


@pytest.mark.parametrize("uri", SSRF_URIS)
def test_remote_and_local_locations_are_refused_and_nothing_is_queued(validator: Api, uri: str) -> None:
    ok = GOOD["image_a"]
    before = tenant_judgment_count(validator.tenant)
    attempts = [
        (("body", "image_a"), validator.post("/v1/judgments", json={**GOOD, "image_a": uri})),
        (("body", "image_b"), validator.post("/v1/judgments", json={**GOOD, "image_b": uri, "prompt": "b"})),
        (
            ("body", "items", 0, "image_b"),
            validator.post("/v1/batches", json={"items": [{**GOOD, "image_b": uri}]}),
        ),
        (
            ("body", "line 1", "image_a"),
            validator.post(
                "/v1/batches/jsonl",
                content=(_LINE % 9).replace(ok, uri.replace("\\", "\\\\")).encode(),
                headers={"content-type": JSONL},
            ),
        ),
        (
            ("body", "chosen"),
            validator.post("/v1/users/v-user/references", json={**GOOD_REF, "chosen": uri}),
        ),
    ]
    for loc, resp in attempts:
        err = assert_422(resp, loc)
        assert "allowed" in err["msg"] or "accepted" in err["msg"] or "s3://" in err["msg"], err
    assert tenant_judgment_count(validator.tenant) == before
    assert judgments_with_uri(validator.tenant, uri) == 0
    assert references_with_uri(validator.tenant, uri) == 0


@pytest.fixture
def file_uris_allowed(stack: Stack) -> Iterator[TestClient]:
    """The API with PIGREWARD_API_ALLOW_FILE_URIS on (settings re-read), restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIGREWARD_API_ALLOW_FILE_URIS", "true")
        reset_settings()
        try:
            yield make_client()
        finally:
            mp.delenv("PIGREWARD_API_ALLOW_FILE_URIS")
            reset_settings()


def test_file_uris_climbing_out_are_refused_even_when_file_uris_are_on(
    validator: Api, file_uris_allowed: TestClient
) -> None:
    for uri in ("file://../../etc/passwd", "file://uploads/../../../etc/passwd"):
        resp = file_uris_allowed.post(
            "/v1/judgments", headers=validator.headers, json={**GOOD, "image_a": uri, "prompt": uri}
        )
        assert_422(resp, ("body", "image_a"), "climb out")
        assert judgments_with_uri(validator.tenant, uri) == 0


# ---------------------------------------------------------------------------------------------
# body limit


@pytest.fixture
def small_body_limit(stack: Stack) -> Iterator[TestClient]:
    """A fresh app built with PIGREWARD_API_MAX_BODY_BYTES=1000; the setting is restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIGREWARD_API_MAX_BODY_BYTES", "1000")
        reset_settings()
        try:
            yield make_client()
        finally:
            mp.delenv("PIGREWARD_API_MAX_BODY_BYTES")
            reset_settings()


def _big_judgment() -> bytes:
    return json.dumps({**GOOD, "prompt": "p" * 1500}).encode()


def test_declared_body_over_the_limit_is_413(validator: Api, small_body_limit: TestClient) -> None:
    before = tenant_judgment_count(validator.tenant)
    headers = {**validator.headers, "content-type": "application/json"}
    resp = small_body_limit.post("/v1/judgments", content=_big_judgment(), headers=headers)
    assert resp.status_code == 413, resp.text
    assert resp.json() == {"detail": "request body over 1000 bytes"}

    jsonl = "\n".join([_LINE % i for i in range(20)]).encode()
    resp = small_body_limit.post(
        "/v1/batches/jsonl", content=jsonl, headers={**headers, "content-type": JSONL}
    )
    assert resp.status_code == 413, resp.text

    files = {
        "chosen": ("c.png", b"\x89PNG" + b"0" * 2000, "image/png"),
        "rejected": ("r.png", b"x", "image/png"),
    }
    resp = small_body_limit.post(
        "/v1/users/v-user/references/upload", data={"prompt": "p"}, files=files, headers=validator.headers
    )
    assert resp.status_code == 413, resp.text

    # small requests still pass under the small limit
    resp = small_body_limit.post("/v1/users", json={"external_id": "small"}, headers=validator.headers)
    assert resp.status_code == 201, resp.text
    assert tenant_judgment_count(validator.tenant) == before


def _chunks(data: bytes, size: int = 200) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_streamed_body_over_the_limit_is_413_jsonl(validator: Api, small_body_limit: TestClient) -> None:
    jsonl = "\n".join([_LINE % i for i in range(20)]).encode()
    resp = small_body_limit.post(
        "/v1/batches/jsonl", content=_chunks(jsonl), headers={**validator.headers, "content-type": JSONL}
    )
    assert resp.status_code == 413, resp.text
    assert resp.json() == {"detail": "request body over 1000 bytes"}


def test_streamed_body_over_the_limit_is_413_json(validator: Api, small_body_limit: TestClient) -> None:
    """A chunked body (no Content-Length) over the limit on a JSON endpoint must be 413 too.

    BodyLimit raises `_TooLarge` from `receive`, but FastAPI reads JSON bodies inside a
    `try/except Exception` that turns any error into 400 "There was an error parsing the body".
    """
    before = tenant_judgment_count(validator.tenant)
    resp = small_body_limit.post(
        "/v1/judgments",
        content=_chunks(_big_judgment()),
        headers={**validator.headers, "content-type": "application/json"},
    )
    assert resp.status_code == 413, resp.text
    assert resp.json() == {"detail": "request body over 1000 bytes"}
    assert tenant_judgment_count(validator.tenant) == before


# ---------------------------------------------------------------------------------------------
# ids the database cannot hold


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/judgments/2147483648", {404, 422}),
        ("GET", "/v1/batches/2147483648", {404, 422}),
        ("POST", "/v1/batches/2147483648/cancel", {404, 422}),
        ("GET", "/v1/judgments?batch_id=2147483648", {200, 422}),
        ("GET", "/v1/judgments?offset=100000000000000000000", {200, 422}),
        ("GET", "/v1/users?offset=100000000000000000000", {200, 422}),
    ],
)
def test_ids_and_offsets_out_of_the_database_range_are_not_500(
    validator: Api, method: str, path: str, allowed: set[int]
) -> None:
    """Integer path/query values beyond Postgres' INTEGER/BIGINT must be a client error, not a 500."""
    raw = make_client(raise_server_exceptions=False)
    resp = raw.request(method, path, headers=validator.headers)
    assert resp.status_code in allowed, f"{method} {path}: {resp.status_code} {resp.text[:300]}"


# ---------------------------------------------------------------------------------------------
# judgments: one end to end, idempotency


def test_single_judgment_end_to_end_and_idempotent_resubmit(stack: Stack, client: TestClient) -> None:
    api_ = Api.for_new_tenant("single", client)
    create_user_with_taste(api_, stack, "warm-fan", warm=True)
    warm = image(stack, "api-single/warm.png", warmth=0.92, seed=911)
    cold = image(stack, "api-single/cold.png", warmth=0.08, seed=912)
    body = judgment_spec("warm-fan", "a market street", warm, cold)

    first = api_.ok("POST", "/v1/judgments", expect=202, json=body)
    assert first["status"] in ("queued", "running", "done")
    assert first["user"] == "warm-fan" and first["image_a"] == warm and first["batch_id"] is None
    again = api_.ok("POST", "/v1/judgments", expect=202, json=body)
    assert again["id"] == first["id"]
    # lite's default is swap off, so saying so explicitly is the same judgment
    explicit = api_.ok("POST", "/v1/judgments", expect=202, json={**body, "swap": False, "backend": "lite"})
    assert explicit["id"] == first["id"]
    other = api_.ok("POST", "/v1/judgments", expect=202, json={**body, "prompt": "another street"})
    assert other["id"] != first["id"]

    done = wait_judgment(api_, first["id"])
    assert done["status"] == "done", done
    assert done["winner"] == "A", done
    assert 3 <= len(done["dimensions"]) <= 5
    assert abs(sum(d["score_a"] for d in done["dimensions"]) - done["total_a"]) < 0.05
    assert all(d["reason"] for d in done["dimensions"])
    assert done["backend"] == "lite" and done["judge_model"] and done["finished_at"]

    # re-submitting a finished judgment returns it as it is: same id, no new row, not re-run
    wait_judgment(api_, other["id"])  # both finished: their rows are all written before counting
    rows_before = user_rows(api_.tenant, "warm-fan")
    resent = api_.ok("POST", "/v1/judgments", expect=202, json=body)
    assert resent["id"] == first["id"] and resent["status"] == "done"
    assert resent["dimensions"] == done["dimensions"]
    assert user_rows(api_.tenant, "warm-fan") == rows_before
    listed = api_.ok("GET", "/v1/judgments", params={"user": "warm-fan"})
    assert sorted(r["id"] for r in listed) == sorted({first["id"], other["id"]})
    assert api_.ok("GET", "/v1/judgments", params={"user": "warm-fan", "status": "rejected"}) == []


# ---------------------------------------------------------------------------------------------
# reference upload


def _png(warmth: float, seed: int) -> bytes:
    params = DrawParams(
        warmth=warmth, saturation=0.7, brightness=0.6, clutter=0.3, centering=0.6, symmetry=0.4, seed=seed
    )
    return png_bytes(draw_image(params, size=96))


def test_reference_upload_stores_images_and_refuses_non_images(stack: Stack, client: TestClient) -> None:
    api_ = Api.for_new_tenant("upload", client)
    api_.ok("POST", "/v1/users", expect=201, json={"external_id": "uploader"})
    warm, cold = _png(0.9, 1), _png(0.1, 2)
    path = "/v1/users/uploader/references/upload"

    files = {"chosen": ("warm.png", warm, "image/png"), "rejected": ("cold.png", cold, "image/png")}
    ref = api_.ok("POST", path, expect=201, data={"prompt": "a sunny beach"}, files=files)
    assert ref["prompt"] == "a sunny beach"
    assert ref["chosen"] != ref["rejected"]
    assert ref["chosen"].startswith(("file://uploads/", "s3://")), ref
    again = api_.ok("POST", path, expect=201, data={"prompt": "a sunny beach"}, files=files)
    assert again["id"] == ref["id"]  # the same pair once
    assert [r["id"] for r in api_.ok("GET", "/v1/users/uploader/references")] == [ref["id"]]

    # not an image, on either side: 422 whose detail names the field
    cases = {
        "chosen": {"chosen": ("notes.txt", b"just text", "text/plain"), "rejected": files["rejected"]},
        "rejected": {
            "chosen": files["chosen"],
            "rejected": ("fake.png", b"\x89PNG\r\n\x1a\nnope", "image/png"),
        },
    }
    for field, bad in cases.items():
        resp = api_.post(path, data={"prompt": "broken"}, files=bad)
        assert_422(resp, ("body", field))
        assert resp.json()["detail"][0]["msg"].startswith(f"{field}: "), resp.json()
    truncated = {"chosen": files["chosen"], "rejected": ("half.png", cold[: len(cold) // 2], "image/png")}
    resp = api_.post(path, data={"prompt": "truncated"}, files=truncated)
    assert_422(resp, ("body", "rejected"))
    assert resp.json()["detail"][0]["msg"].startswith("rejected: "), resp.text
    assert api_.ok("GET", "/v1/users/uploader")["references"] == 1

    # the worker can read what was uploaded: the context builds from it
    api_.ok("POST", "/v1/users/uploader/context", expect=202)
    context = wait_context(api_, "uploader")
    assert context["reference_count"] == 1 and len(context["rationales"]) == 1
    assert context["backend"] == "lite"


# ---------------------------------------------------------------------------------------------
# deleting a user


def test_deleting_a_user_removes_their_data_and_nothing_else(stack: Stack, client: TestClient) -> None:
    api_ = Api.for_new_tenant("delete", client)
    neighbour = Api.for_new_tenant("delete-neighbour", client)  # has a user with the same external id
    warm = image(stack, "api-delete/warm.png", warmth=0.9, seed=921)
    cold = image(stack, "api-delete/cold.png", warmth=0.1, seed=922)
    mid = image(stack, "api-delete/mid.png", warmth=0.5, seed=923)

    for who, taste in (("keep", True), ("drop", False)):
        create_user_with_taste(api_, stack, who, warm=taste)
        api_.ok("POST", f"/v1/users/{who}/context", expect=202)
    create_user_with_taste(neighbour, stack, "drop", warm=True)
    neighbour.ok("POST", "/v1/users/drop/context", expect=202)
    for who in ("keep", "drop"):
        wait_context(api_, who)
    wait_context(neighbour, "drop")

    singles = {
        who: [
            api_.ok("POST", "/v1/judgments", expect=202, json=judgment_spec(who, f"single {i}", a, b))["id"]
            for i, (a, b) in enumerate([(warm, cold), (mid, warm)])
        ]
        for who in ("keep", "drop")
    }
    items = [
        judgment_spec(who, f"batch {i}", a, b)
        for who in ("keep", "drop")
        for i, (a, b) in enumerate([(cold, mid), (warm, mid)])
    ]
    batch = api_.ok("POST", "/v1/batches", expect=202, json={"name": "mixed", "items": items})
    neighbour_row = neighbour.ok(
        "POST", "/v1/judgments", expect=202, json=judgment_spec("drop", "n", warm, cold)
    )
    wait_batch(api_, batch["id"], timeout=120)
    for ids in singles.values():
        for jid in ids:
            assert wait_judgment(api_, jid)["status"] == "done"
    assert wait_judgment(neighbour, neighbour_row["id"])["status"] == "done"

    keep_before = user_rows(api_.tenant, "keep")
    drop_before = user_rows(api_.tenant, "drop")
    neighbour_before = user_rows(neighbour.tenant, "drop")
    assert keep_before["references"] == 6 and keep_before["contexts"] >= 1
    assert keep_before["judgments"] == 4 and keep_before["batch_items"] == 2
    assert keep_before["dimension_scores"] >= 12
    assert drop_before["judgments"] == 4 and drop_before["dimension_scores"] >= 12
    keep_api_before = {
        "user": api_.ok("GET", "/v1/users/keep"),
        "refs": api_.ok("GET", "/v1/users/keep/references"),
        "context": api_.ok("GET", "/v1/users/keep/context"),
        "judgments": api_.ok("GET", "/v1/judgments", params={"user": "keep"}),
    }

    deleted = api_.ok("DELETE", "/v1/users/drop")
    assert deleted["external_id"] == "drop"
    assert deleted["deleted"]["references"] == 6
    assert deleted["deleted"]["judgments"] == 4
    assert deleted["deleted"]["contexts"] == drop_before["contexts"] >= 1
    assert deleted["deleted"]["dimension_scores"] == drop_before["dimension_scores"]

    # gone, through the API and in the database
    for path, detail in (
        ("/v1/users/drop", "user not found"),
        ("/v1/users/drop/references", "user not found"),
        ("/v1/users/drop/context", "user not found"),
        *((f"/v1/judgments/{jid}", "judgment not found") for jid in singles["drop"]),
    ):
        resp = api_.get(path)
        assert resp.status_code == 404 and resp.json() == {"detail": detail}, (path, resp.text)
    assert api_.ok("GET", "/v1/judgments", params={"user": "drop"}) == []
    assert user_rows(api_.tenant, "drop") == dict.fromkeys(drop_before, 0)
    again = api_.delete("/v1/users/drop")
    assert again.status_code == 404 and again.json() == {"detail": "user not found"}

    # the other user, and the other tenant's user of the same name, keep everything
    assert user_rows(api_.tenant, "keep") == keep_before
    assert user_rows(neighbour.tenant, "drop") == neighbour_before
    assert api_.ok("GET", "/v1/users/keep") == keep_api_before["user"]
    assert api_.ok("GET", "/v1/users/keep/references") == keep_api_before["refs"]
    assert api_.ok("GET", "/v1/users/keep/context") == keep_api_before["context"]
    assert api_.ok("GET", "/v1/judgments", params={"user": "keep"}) == keep_api_before["judgments"]
    assert [u["external_id"] for u in api_.ok("GET", "/v1/users")] == ["keep"]
    remaining = api_.ok("GET", f"/v1/batches/{batch['id']}")
    assert remaining["counts"] == {"done": 2} and remaining["finished"] is True
    assert neighbour.ok("GET", "/v1/users/drop")["references"] == 6
    assert neighbour.ok("GET", f"/v1/judgments/{neighbour_row['id']}")["status"] == "done"


def test_metrics_endpoint_counts_requests_by_route_template(stack) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from api.main import create_app

    client = TestClient(create_app())
    client.get("/v1/judgments/12345", headers={"Authorization": "Bearer pgr_x_y"})
    text = client.get("/metrics").text
    assert (
        'pigreward_api_requests_total{method="GET",route="/v1/judgments/{judgment_id}",status="401"}' in text
    )
    assert "pigreward_api_request_seconds_bucket" in text and "pigreward_judgments_total" in text


def _drop_connections() -> int:
    """What a database restart does to every open connection of the test database.

    The API's and the worker's connections are what the tests watch; this test process's own pool
    (the helpers' `get_db()`) is emptied, so later tests do not trip over connections killed here.
    """
    import psycopg

    from ops.stack import postgres_admin_url

    database = get_db().url.database
    with psycopg.connect(postgres_admin_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    get_db().dispose()
    return int(row[0]) if row else 0


def test_a_connection_dropped_in_steady_use_costs_one_503(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections dropped under the API and the worker (as by a Postgres restart) while in use (no
    idle ping): the API answers 503 + Retry-After (not 500) once, then serves again; the worker's
    next judgment is done."""
    import models.db

    monkeypatch.setattr(models.db, "PING_AFTER_IDLE_S", 3600.0)
    a = world.a
    assert a.get("/v1/users").status_code == 200  # the pool holds a live connection now
    assert _drop_connections() >= 1
    first = a.get("/v1/users")  # the pooled connection is a dead one
    assert first.status_code == 503, first.text
    assert first.headers["retry-after"] == "1"
    assert first.json() == {"detail": "database unavailable, retry shortly"}
    assert a.get("/v1/users").status_code == 200  # the pool was rebuilt
    row = a.ok(
        "POST", "/v1/judgments", expect=202, json=judgment_spec(world.user, "after", world.warm, world.cold)
    )
    assert wait_judgment(a, row["id"])["status"] == "done"


def test_an_idle_connection_dropped_is_replaced_before_use(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After idling past PING_AFTER_IDLE_S a pooled connection is pinged: a dead one is swapped for a
    new one and the request never sees the restart."""
    import models.db

    monkeypatch.setattr(models.db, "PING_AFTER_IDLE_S", 0.0)
    a = world.a
    assert a.get("/v1/users").status_code == 200
    assert _drop_connections() >= 1
    assert a.get("/v1/users").status_code == 200
    row = a.ok(
        "POST", "/v1/judgments", expect=202, json=judgment_spec(world.user, "idle", world.warm, world.cold)
    )
    assert wait_judgment(a, row["id"])["status"] == "done"


def test_confidence_and_context_quality_are_served(stack: Stack, client: TestClient) -> None:
    """A verdict carries how sure it is; the context how well it predicts the user's own choices."""
    api_ = Api.for_new_tenant("trust", client)
    create_user_with_taste(api_, stack, "warm-trust", warm=True)
    warm = image(stack, "api-trust/warm.png", warmth=0.9, seed=931)
    cold = image(stack, "api-trust/cold.png", warmth=0.1, seed=932)
    mild = image(stack, "api-trust/mild.png", warmth=0.55, seed=933)
    clear = api_.ok(
        "POST", "/v1/judgments", expect=202, json=judgment_spec("warm-trust", "a harbour", warm, cold)
    )
    close = api_.ok(
        "POST", "/v1/judgments", expect=202, json=judgment_spec("warm-trust", "a harbour", mild, cold)
    )
    done = wait_judgment(api_, clear["id"])
    near = wait_judgment(api_, close["id"])
    assert done["status"] == near["status"] == "done", (done, near)
    assert done["winner"] == "A" and 0.5 < done["confidence"] <= 1.0
    assert done["confidence_signals"]["source"] == "bradley-terry"
    # no calibration fitted for lite in this database: the raw value, marked uncalibrated
    assert done["calibration_version"] is None and done["confidence"] == done["confidence_raw"]
    assert near["confidence"] < done["confidence"]  # the closer pair is the less certain verdict

    context = wait_context(api_, "warm-trust")
    quality = context["quality"]
    assert quality is not None and quality["held_out"] == 6 and quality["orders"] == 1
    assert 0.0 <= quality["accuracy"] <= 1.0 and quality["score"] == round((quality["correct"] + 1) / 8, 4)
    assert len(quality["per_reference"]) == 6 and isinstance(quality["flagged"], list)

    cut = (done["confidence"] + near["confidence"]) / 2
    kept = api_.ok("GET", "/v1/judgments", params={"user": "warm-trust", "min_confidence": cut})
    assert [r["id"] for r in kept] == [done["id"]]
    assert len(api_.ok("GET", "/v1/judgments", params={"user": "warm-trust", "min_confidence": 0})) == 2
    assert api_.get("/v1/judgments", params={"min_confidence": 1.5}).status_code == 422
