"""One validation model for every way in (issue 12, defects 2, 3 and 5).

NUL bytes, unpaired surrogates and over-long or mistyped fields are refused before anything reaches the
database: 422 from the API (never a 500), `InvalidJudgmentRequest` (a ValueError) from
`tasks.judge.delay`, with nothing recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.requests import InvalidJudgmentRequest
from tasks import judge
from tests.integration.api_helpers import JSONL, Api, assert_422, make_client, tenant_judgment_count
from tests.integration.conftest import Stack
from tests.integration.helpers import image, judgment_rows

NUL = "a\u0000b"
SURROGATE = "\\ud800"  # as JSON text: json.dumps cannot write an unpaired surrogate as UTF-8


@pytest.fixture(scope="module")
def client(stack: Stack) -> TestClient:
    return make_client(raise_server_exceptions=False)  # a 500 is an answer here, not an exception


@pytest.fixture(scope="module")
def api_(client: TestClient) -> Api:
    api_ = Api.for_new_tenant("chars", client)
    api_.ok("POST", "/v1/users", expect=201, json={"external_id": "c-user"})
    return api_


@pytest.fixture(scope="module")
def pair(stack: Stack) -> tuple[str, str]:
    return image(stack, "chars/a.png", warmth=0.8, seed=1201), image(
        stack, "chars/b.png", warmth=0.2, seed=1202
    )


def _raw(body: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"content-type": "application/json"}}


def _judgment(pair: tuple[str, str], prompt: str) -> str:
    """A judgment body as JSON text, with `prompt` inserted verbatim (so it may hold \\ud800)."""
    return (
        f'{{"user": "c-user", "prompt": "{prompt}", "image_a": {json.dumps(pair[0])}, '
        f'"image_b": {json.dumps(pair[1])}}}'
    )


@pytest.mark.parametrize("bad", [json.dumps(NUL)[1:-1], SURROGATE, "\\u0007bell"])
def test_control_characters_in_free_text_are_422_everywhere(
    api_: Api, pair: tuple[str, str], bad: str
) -> None:
    before = tenant_judgment_count(api_.tenant)
    judgment = _judgment(pair, bad)
    cases = {
        "judgment prompt": ("/v1/judgments", _raw(judgment), ("body", "prompt")),
        "batch name": (
            "/v1/batches",
            _raw(f'{{"name": "{bad}", "items": [{_judgment(pair, "ok")}]}}'),
            ("body", "name"),
        ),
        "batch item prompt": (
            "/v1/batches",
            _raw(f'{{"items": [{judgment}]}}'),
            ("body", "items", 0, "prompt"),
        ),
        "jsonl prompt": (
            "/v1/batches/jsonl",
            {"content": judgment.encode(), "headers": {"content-type": JSONL}},
            ("body", "line 1", "prompt"),
        ),
        "reference prompt": (
            "/v1/users/c-user/references",
            _raw(
                f'{{"prompt": "{bad}", "chosen": {json.dumps(pair[0])}, "rejected": {json.dumps(pair[1])}}}'
            ),
            ("body", "prompt"),
        ),
    }
    for what, (path, kwargs, loc) in cases.items():
        resp = api_.post(path, **kwargs)
        assert resp.status_code == 422, (what, resp.status_code, resp.text[:300])
        assert_422(resp, loc, "control character" if bad != SURROGATE else None)
    upload = api_.post(
        "/v1/users/c-user/references/upload",
        data={"prompt": NUL},
        files={"chosen": ("a.png", b"x", "image/png"), "rejected": ("b.png", b"y", "image/png")},
    )
    assert_422(upload, ("body", "prompt"), "control character")
    assert tenant_judgment_count(api_.tenant) == before


def test_nul_in_query_and_path_parameters_is_422_not_500(api_: Api) -> None:
    for path in ("/v1/judgments?user=%00", "/v1/batches/jsonl?name=%00", "/v1/users/a%00b"):
        method = "POST" if "jsonl" in path else "GET"
        resp = api_.request(method, path, content=b"", headers={"content-type": JSONL})
        assert resp.status_code == 422, (path, resp.status_code, resp.text[:300])


@pytest.mark.parametrize(
    "path",
    [
        "/ui/judgments/99999999999999999999",
        "/ui/batches/99999999999",
        "/ui/users/%00",
        "/ui/images/99999999999/a",
    ],
)
def test_viewer_routes_with_overflowing_ids_or_nul_answer_4xx(api_: Api, path: str) -> None:
    resp = api_.client.get(path, cookies={"pigreward_key": api_.key}, follow_redirects=False)
    assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:300])


@pytest.mark.parametrize("cookie", ['"pgr_\\000_x"', "pgr_\x00_x", "pgr_abc", "pgr_" + "a" * 5000])
def test_a_malformed_key_is_401_not_500(client: TestClient, cookie: str) -> None:
    for path in ("/v1/users", "/ui/judgments/1"):
        resp = client.get(
            path,
            headers={"Cookie": f"pigreward_key={cookie}", "X-API-Key": cookie[:200]},
            follow_redirects=False,
        )
        assert resp.status_code in (401, 303), (path, resp.status_code, resp.text[:300])


def test_the_python_path_refuses_what_the_api_refuses(stack: Stack, pair: tuple[str, str]) -> None:
    """`tasks.judge.delay` with what the API answers 422 raises a ValueError naming the field; no row."""
    a, b = pair
    before = len(judgment_rows())
    cases: dict[str, tuple[tuple[Any, ...], str]] = {
        "100 KB prompt": (("u", "x" * 100_000, a, b), "prompt"),
        "swap as text": (("u", "p", a, b, {"swap": "yes"}), "swap"),
        "NUL in prompt": (("u", NUL, a, b), "control character"),
        "NUL in user": (("a\x00b", "p", a, b), "user"),
        "over-long user id": (("u" * 300, "p", a, b), "user"),
        "over-long URI": (("u", "p", "s3://pigreward-test/" + "k" * 5000, b), "image_a"),
        "unknown scheme": (("u", "p", "http://169.254.169.254/latest/meta-data", b), "scheme 'http'"),
        "unknown backend": (("u", "p", a, b, {"backend": "no-such-model"}), "backend"),
        "unknown option": (("u", "p", a, b, {"temperature": 2}), "temperature"),
        "over-long tenant": (("u", "p", a, b, None, "t" * 500), "tenant"),
        "surrogate in prompt": (("u", "p\ud800", a, b), "U+D800"),
    }
    for what, (args, words) in cases.items():
        with pytest.raises(InvalidJudgmentRequest) as info:
            judge.delay(*args)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert words in message, (what, message)
        assert "\n" not in message and "SQL" not in message, (what, message)
    assert len(judgment_rows()) == before
