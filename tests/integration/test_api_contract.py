"""The API's contract with careless clients and its own operators (issue 12, defects 6, 7 and 8).

No secret or server path leaks into logs or errors; the OpenAPI document says what the API does
(security schemes, documented errors, 405 for a path's other methods); reference pairs are checked
when added and can be removed (the context is rebuilt); an unreachable broker or database is a 503
with Retry-After; missing S3 credentials are a configuration error naming the setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.errors import ConfigurationError
from ops.stack import api_server, configured, free_port, wait_until
from tasks import judge
from tests.integration.api_helpers import Api, make_client, wait_for
from tests.integration.conftest import Stack
from tests.integration.helpers import image, user_who_likes_warm
from workers.store import ImageStore, StoreConfig


@pytest.fixture(scope="module")
def client(stack: Stack) -> TestClient:
    return make_client(raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api_(client: TestClient) -> Api:
    return Api.for_new_tenant("contract", client)


# --- defect 6: leaks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path_factory.mktemp("contract-api") / "api.log"
    with api_server(stack.env, log_path) as url:
        yield url, log_path


def test_key_login_by_query_never_reaches_the_access_log(live_api: tuple[str, Path], api_: Api) -> None:
    url, log_path = live_api
    resp = httpx.get(f"{url}/ui/login", params={"key": api_.key, "next": "/ui/login"}, follow_redirects=False)
    assert resp.status_code == 303
    form = httpx.post(f"{url}/ui/login", data={"key": api_.key, "next": "/ui/login"}, follow_redirects=False)
    assert form.status_code == 303
    wait_until(lambda: "/ui/login?" in log_path.read_text(errors="replace"), 10, "access log line")
    text = log_path.read_text(errors="replace")
    secret = api_.key.split("_", 2)[2]  # pgr_<prefix>_<secret>; the secret may itself hold "_"
    assert api_.key not in text and secret not in text, text[-2000:]
    assert "key=***" in text


def test_errors_name_files_by_uri_not_by_server_path(stack: Stack) -> None:
    user_who_likes_warm(stack, "leak-user")
    b = image(stack, "leak/b.png", warmth=0.3, seed=1401)
    result = judge.delay("leak-user", "p", "file://nowhere/missing.png", b).get(timeout=120)
    assert result["status"] == "rejected" and result["error_code"] == "image_not_found"
    assert "file://nowhere/missing.png" in result["error"]
    assert str(stack.image_root) not in result["error"], result["error"]
    outside = judge.delay("leak-user", "p", "file://../../etc/hostname", b).get(timeout=120)
    assert outside["error_code"] == "forbidden_location"
    assert str(stack.image_root) not in outside["error"], outside["error"]


# --- defect 7: the OpenAPI document ----------------------------------------------------------------


def test_openapi_declares_security_and_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["apiKey"]["name"] == "X-API-Key"
    for path, item in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in item.items():
            responses = set(op["responses"])
            assert {"401", "503"} <= responses, (method, path, responses)
            assert op.get("security"), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path, responses)
    judgment = doc["components"]["schemas"]["JudgmentCreate"]["properties"]
    assert judgment["prompt"]["maxLength"] > 0 and "pattern" in judgment["prompt"]
    assert judgment["image_a"]["pattern"].startswith("^(s3://")


def test_other_methods_on_a_path_are_405_with_allow(api_: Api) -> None:
    resp = api_.get("/v1/batches/jsonl")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST", (resp.status_code, resp.headers)
    resp = api_.request("PUT", "/v1/users")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, POST"


def test_jsonl_needs_its_media_type(api_: Api) -> None:
    resp = api_.post("/v1/batches/jsonl", content=b"{}", headers={"content-type": "text/plain"})
    assert resp.status_code == 415 and "application/x-ndjson" in resp.json()["detail"]


# --- defect 8: reference pairs, outages, configuration ---------------------------------------------


def test_reference_pairs_are_checked_when_added_and_can_be_removed(stack: Stack, api_: Api) -> None:
    api_.ok("POST", "/v1/users", expect=201, json={"external_id": "careful"})
    good = [image(stack, f"contract/{i}.png", warmth=i / 4, seed=1410 + i) for i in range(4)]
    stack.put("contract/notes.txt", b"not an image")
    for field, uri in (
        ("chosen", "s3://pigreward-test/contract/missing.png"),
        ("rejected", "s3://pigreward-test/contract/notes.txt"),
    ):
        body = {"prompt": "p", "chosen": good[0], "rejected": good[1], field: uri}
        resp = api_.post("/v1/users/careful/references", json=body)
        assert resp.status_code == 422, resp.text
        [error] = resp.json()["detail"]
        assert error["loc"] == ["body", field] and uri.rsplit("/", 1)[1] in error["msg"], error
    assert api_.ok("GET", "/v1/users/careful/references") == []
    first = api_.ok(
        "POST",
        "/v1/users/careful/references",
        expect=201,
        json={"prompt": "a", "chosen": good[0], "rejected": good[1]},
    )
    api_.ok(
        "POST",
        "/v1/users/careful/references",
        expect=201,
        json={"prompt": "b", "chosen": good[2], "rejected": good[3]},
    )
    api_.ok("POST", "/v1/users/careful/context", expect=202, json={})
    wait_for(lambda: api_.get("/v1/users/careful/context").status_code == 200, 120, "first context")
    removed = api_.ok("DELETE", f"/v1/users/careful/references/{first['id']}")
    assert removed["remaining"] == 1 and removed["context_task_id"]
    wait_for(
        lambda: api_.ok("GET", "/v1/users/careful/context")["reference_count"] == 1,
        120,
        "context rebuilt without it",
    )
    assert api_.delete(f"/v1/users/careful/references/{first['id']}").status_code == 404


def test_an_unreachable_broker_or_database_is_503_with_retry_after(stack: Stack, api_: Api) -> None:
    body = {
        "user": "careful",
        "prompt": "outage",
        "image_a": "s3://pigreward-test/a.png",
        "image_b": "s3://pigreward-test/b.png",
    }
    with configured({**stack.env, "PIGREWARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}):
        down = TestClient(make_client().app, raise_server_exceptions=False)
        resp = down.post("/v1/judgments", json=body, headers=api_.headers)
    assert resp.status_code == 503 and resp.headers["retry-after"], (resp.status_code, resp.text)
    assert "broker" in resp.json()["detail"]
    again = api_.post("/v1/judgments", json=body)  # the row was kept: the retry returns the same judgment
    assert again.status_code == 202


def test_missing_s3_credentials_are_a_configuration_error(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = ImageStore(StoreConfig(image_root=stack.image_root, s3_endpoint_url=stack.s3_endpoint))
    with pytest.raises(ConfigurationError) as info:
        store.read("s3://pigreward-test/a.png")
    assert "PIGREWARD_S3_ACCESS_KEY_ID" in info.value.message
    assert info.value.code == "configuration_error"
