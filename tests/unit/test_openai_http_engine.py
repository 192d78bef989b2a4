"""OpenAIHTTPEngine over real HTTP: identity, request bodies, images, retries, refusals, concurrency, usage.

Two servers on 127.0.0.1: the project's scripted fake (`tests/support/fake_openai.py`) and, for the
cases it cannot script (429, 400, hanging, odd /v1/models listings, usage details), a small stdlib
server defined here whose answers are queued per test.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image, ImageDraw

from core.errors import BackendRejected, BackendUnavailable, PermanentError, TransientError
from ops.stack import free_port
from tests.support.fake_openai import fake_openai_server
from workers.backends.openai_http import HTTPEngineConfig, OpenAIHTTPEngine, parse_logprobs
from workers.generation import (
    ChatMessage,
    Engine,
    Generation,
    GenerationRequest,
    Grammar,
    ModelIdentity,
    Sampling,
    TextPart,
    TokenLogprob,
)
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.protocols import get_protocol, json_v1

pytestmark = pytest.mark.timeout(30)

DATA_URL_PREFIX = "data:image/png;base64,"


# -- a scriptable server ---------------------------------------------------------------------------------


def _completion(text: str, model: str = "served", finish: str = "stop", usage: dict | None = None) -> dict:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def _last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p.get("type") == "text")


class Script:
    """What the server answers. `chat` is consumed in order; when empty, the last user text is echoed."""

    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self.lock = threading.Lock()
        self.models: list[dict[str, Any]] = (
            models if models is not None else [{"id": "served", "root": "/m/snapshots/feedface01/"}]
        )
        self.models_status = 200
        self.health_status = 200
        self.chat: list[tuple[Any, ...]] = []
        self.release = threading.Event()
        self.gets: Counter[str] = Counter()
        self.posts = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any) -> None:
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802
            with script.lock:
                script.gets[self.path] += 1
            if self.path == "/health":
                self._send(script.health_status, {"status": "?"})
            elif self.path == "/v1/models":
                self._send(script.models_status, {"object": "list", "data": script.models})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.posts += 1
                script.bodies.append(body)
                script.headers.append(dict(self.headers))
                step = script.chat.pop(0) if script.chat else None
            if step is None:
                self._send(200, _completion("echo: " + _last_user_text(body), model=body.get("model", "")))
            elif step[0] == "hang":
                script.release.wait(10)
                with suppress(OSError):  # the client gave up long ago
                    self._send(200, _completion("too late"))
            else:
                self._send(step[0], step[1])

    return Handler


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        script.release.set()
        server.shutdown()
        server.server_close()


# -- helpers ------------------------------------------------------------------------------------------------


def _config(url: str, **overrides: Any) -> HTTPEngineConfig:
    values: dict[str, Any] = {
        "judge_url": url,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 5.0,
        "max_attempts": 3,
        "backoff_s": 0.01,
        "backoff_max_s": 0.02,
    }
    values.update(overrides)
    return HTTPEngineConfig(**values)


@contextmanager
def engine_for(url: str, **overrides: Any) -> Iterator[OpenAIHTTPEngine]:
    engine = OpenAIHTTPEngine(_config(url, **overrides))
    try:
        yield engine
    finally:
        engine.close()


def _png(color: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> bytes:
    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).ellipse((2, 2, 10, 10), fill=(255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image(color: tuple[int, int, int], name: str) -> NormalizedImage:
    return normalize(_png(color), f"mem://{name}.png", ImageLimits())


_RED = _image((220, 30, 30), "red")
_BLUE = _image((30, 30, 220), "blue")


@pytest.fixture(scope="module")
def red() -> NormalizedImage:
    return _RED


@pytest.fixture(scope="module")
def blue() -> NormalizedImage:
    return _BLUE


def _text_request(text: str, role: str = "judge", **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", (TextPart(text),)),),
        sampling=kwargs.pop("sampling", Sampling(max_tokens=16)),
        role=role,  # type: ignore[arg-type]
        **kwargs,
    )


def _judge_request(prompt: str, sampling: Sampling | None = None) -> GenerationRequest:
    """A real pigreward-v1 judge request (the fake server reads its "Prompt:" line and two images)."""
    return get_protocol("pigreward-v1").judge_request(
        ["likes warm light"], prompt, _RED, _BLUE, sampling or Sampling(max_tokens=64)
    )


def _image_urls(body: dict[str, Any]) -> list[str]:
    return [
        part["image_url"]["url"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# -- identity ---------------------------------------------------------------------------------------------------


def test_engine_satisfies_protocol() -> None:
    with engine_for(_closed_url()) as engine:
        assert isinstance(engine, Engine)


def test_identity_from_served_models_with_snapshot_revision() -> None:
    with fake_openai_server() as (url, _state), engine_for(url) as engine:
        assert engine.identity("judge") == ModelIdentity("stub-judge", "abc1234def")
        assert engine.identity("reasoner") == ModelIdentity("stub-judge", "abc1234def")


def test_configured_revision_wins() -> None:
    with fake_openai_server() as (url, _state), engine_for(url, judge_revision="v2.1") as engine:
        assert engine.identity("judge") == ModelIdentity("stub-judge", "v2.1")
        # the reasoner is the same model on the same server: same revision
        assert engine.identity("reasoner") == ModelIdentity("stub-judge", "v2.1")
    with (
        fake_openai_server() as (url, _state),
        engine_for(url, judge_model="stub-judge", reasoner_revision="r9") as engine,
    ):
        assert engine.identity("judge").revision == "abc1234def"
        assert engine.identity("reasoner").revision == "r9"


def test_explicit_model_not_served_is_rejected_with_served_names() -> None:
    script = Script(models=[{"id": "qwen-a"}, {"id": "qwen-b"}])
    with scripted_server(script) as url, engine_for(url, judge_model="pigreward-7b") as engine:
        with pytest.raises(BackendRejected) as info:
            engine.identity("judge")
        assert isinstance(info.value, PermanentError)
        assert "pigreward-7b" in info.value.message
        assert "qwen-a" in info.value.message and "qwen-b" in info.value.message
        # generating with it is refused the same way, before any completion is asked
        with pytest.raises(BackendRejected):
            engine.generate([_text_request("hello")])
        assert script.posts == 0


def test_identity_picks_named_model_and_its_revision() -> None:
    full = "0123456789abcdef0123456789abcdef01234567"
    script = Script(
        models=[
            {"id": "first", "root": "/cache/models--org--first/snapshots/1111111aaaa/"},
            {"id": "second", "root": f"/cache/models--org--second/snapshots/{full}"},
            {"id": "plain", "root": "/srv/models/plain"},
            {"id": "stated", "root": "/x/snapshots/2222222bbbb", "revision": "tagged-rev"},
            {"id": f"/hub/snapshots/{'3' * 12}"},
        ]
    )
    with scripted_server(script) as url:
        with engine_for(url) as engine:
            assert engine.identity("judge") == ModelIdentity("first", "1111111aaaa")
        with engine_for(url, judge_model="second") as engine:
            assert engine.identity("judge") == ModelIdentity("second", full)
        with engine_for(url, judge_model="plain") as engine:
            assert engine.identity("judge") == ModelIdentity("plain", "unknown")
        with engine_for(url, judge_model="stated") as engine:
            assert engine.identity("judge").revision == "tagged-rev"
        with engine_for(url, judge_model=f"/hub/snapshots/{'3' * 12}") as engine:
            assert engine.identity("judge").revision == "3" * 12
        with engine_for(url, judge_model="plain", judge_revision="pinned") as engine:
            assert engine.identity("judge") == ModelIdentity("plain", "pinned")


def test_identity_is_cached() -> None:
    script = Script()
    with scripted_server(script) as url, engine_for(url) as engine:
        first = engine.identity("judge")
        engine.generate([_text_request("a"), _text_request("b")])
        assert engine.identity("judge") == first
        assert script.gets["/v1/models"] == 1


def test_reasoner_on_its_own_server() -> None:
    reasoner_script = Script(models=[{"id": "reasoner-7b", "root": "/m/snapshots/beefcafe99/"}])
    with (
        fake_openai_server() as (judge_url, _state),
        scripted_server(reasoner_script) as reasoner_url,
        engine_for(judge_url, judge_revision="judge-rev", reasoner_url=reasoner_url) as engine,
    ):
        assert engine.identity("judge") == ModelIdentity("stub-judge", "judge-rev")
        # another server: the judge's configured revision does not carry over
        assert engine.identity("reasoner") == ModelIdentity("reasoner-7b", "beefcafe99")
        [gen] = engine.generate([_text_request("why?", role="reasoner")])
        assert gen.text == "echo: why?" and gen.model == "reasoner-7b"
        assert reasoner_script.bodies[0]["model"] == "reasoner-7b"


def test_models_listing_that_is_not_a_list_is_unavailable() -> None:
    script = Script()
    script.models = {"weird": True}  # type: ignore[assignment]
    with scripted_server(script) as url, engine_for(url) as engine, pytest.raises(BackendUnavailable):
        engine.identity("judge")


# -- request bodies and images ----------------------------------------------------------------------------------


def test_body_carries_explicit_sampling_and_messages(red: NormalizedImage, blue: NormalizedImage) -> None:
    proto = get_protocol("pigreward-v1")
    sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=321, seed=1234)
    request = proto.judge_request(["likes red"], "a red barn", red, blue, sampling)
    with fake_openai_server() as (url, state), engine_for(url) as engine:
        [gen] = engine.generate([request])
    assert gen.finish_reason == "stop" and "is better" in gen.text and gen.model == "stub-judge"
    [body] = state.bodies
    assert body["model"] == "stub-judge"
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["max_tokens"] == 321 and body["seed"] == 1234
    assert "response_format" not in body
    system, user = body["messages"]
    assert system == {"role": "system", "content": proto.judge_template.system}
    assert user["role"] == "user" and isinstance(user["content"], list)
    kinds = [p["type"] for p in user["content"]]
    assert kinds == ["text", "image_url", "text", "image_url"]
    assert "1. likes red" in user["content"][0]["text"] and "a red barn" in user["content"][0]["text"]


def test_greedy_defaults_are_sent_explicitly_and_seed_none_is_omitted() -> None:
    script = Script()
    with scripted_server(script) as url, engine_for(url) as engine:
        engine.generate([_text_request("a", sampling=Sampling())])
        engine.generate([_text_request("b", sampling=Sampling(seed=None))])
    first, second = script.bodies
    assert (first["temperature"], first["top_p"], first["max_tokens"], first["seed"]) == (0.0, 1.0, 512, 0)
    # every field that can change a greedy answer, so no server default or generation_config decides it
    assert {k: first[k] for k in ("top_k", "min_p", "repetition_penalty", "frequency_penalty")} == {
        "top_k": -1,
        "min_p": 0.0,
        "repetition_penalty": 1.05,
        "frequency_penalty": 0.0,
    }
    assert first["presence_penalty"] == 0.0 and first["stop"] == []
    assert "seed" not in second and second["temperature"] == 0.0 and second["max_tokens"] == 512
    assert first["messages"] == [{"role": "user", "content": "a"}]  # text-only content is a string


def test_json_schema_request_sets_response_format(red: NormalizedImage, blue: NormalizedImage) -> None:
    script = Script()
    script.chat.append((200, _completion('{"dimensions": [], "summary": ""}')))
    request = get_protocol("json-v1").judge_request(["x"], "p", red, blue, Sampling())
    with scripted_server(script) as url, engine_for(url) as engine:
        [gen] = engine.generate([request])
    assert gen.text == '{"dimensions": [], "summary": ""}'
    fmt = script.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == json_v1.SCHEMA
    assert fmt["json_schema"]["name"]


def test_images_are_png_data_urls_with_the_same_pixels(red: NormalizedImage, blue: NormalizedImage) -> None:
    request = get_protocol("pigreward-v1").judge_request(["x"], "p", red, blue, Sampling())
    with fake_openai_server() as (url, state), engine_for(url) as engine:
        engine.generate([request])
    urls = _image_urls(state.bodies[0])
    assert len(urls) == 2
    for url_, source in zip(urls, (red, blue), strict=True):
        assert url_.startswith(DATA_URL_PREFIX)
        raw = base64.b64decode(url_[len(DATA_URL_PREFIX) :], validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        decoded = Image.open(io.BytesIO(raw))
        assert decoded.format == "PNG" and decoded.size == source.image.size
        assert decoded.convert("RGB").tobytes() == source.image.tobytes()
    assert urls[0] != urls[1]


def test_same_image_sends_the_same_bytes(red: NormalizedImage, blue: NormalizedImage) -> None:
    again = normalize(_png((220, 30, 30)), "mem://elsewhere/red-copy.png", ImageLimits())  # same content
    proto = get_protocol("pigreward-v1")
    with fake_openai_server() as (url, state):
        with engine_for(url) as engine:
            engine.generate(
                [
                    proto.judge_request(["x"], "one", red, blue, Sampling()),
                    proto.judge_request(["x"], "two", blue, again, Sampling()),
                ]
            )
        with engine_for(url) as fresh:  # a new process-level cache encodes identically
            fresh.generate([proto.judge_request(["x"], "three", red, blue, Sampling())])
    by_prompt = {}
    for body in state.bodies:
        by_prompt[_last_user_text(body).split("Prompt: ")[1].split("\n")[0]] = _image_urls(body)
    assert by_prompt["one"][0] == by_prompt["two"][1] == by_prompt["three"][0]  # red
    assert by_prompt["one"][1] == by_prompt["two"][0] == by_prompt["three"][1]  # blue


def test_requests_of_one_user_share_a_serialized_prefix(red: NormalizedImage, blue: NormalizedImage) -> None:
    proto = get_protocol("json-v1")
    other = _image((10, 200, 10), "green")
    rationales = ["Prefers warm light.", "Likes tidy scenes."]
    with fake_openai_server() as (url, state), engine_for(url) as engine:
        engine.generate(
            [
                proto.judge_request(rationales, "a barn", red, blue, Sampling()),
                proto.judge_request(rationales, "a cat", other, red, Sampling()),
            ]
        )
    a, b = (json.dumps(body["messages"]) for body in state.bodies)
    assert a[: a.index("Prompt:")] == b[: b.index("Prompt:")]
    assert "Likes tidy scenes." in a[: a.index("Prompt:")]


def test_results_come_back_in_request_order() -> None:
    script = Script()
    with scripted_server(script) as url, engine_for(url, max_in_flight=3) as engine:
        gens = engine.generate([_text_request(f"request {i}") for i in range(9)])
        assert engine.generate([]) == []
    assert [g.text for g in gens] == [f"echo: request {i}" for i in range(9)]
    assert script.posts == 9


def test_api_key_is_sent_as_bearer_token() -> None:
    script = Script()
    with scripted_server(script) as url, engine_for(url, api_key="sk-test-123") as engine:
        engine.generate([_text_request("hi")])
    assert script.headers[0]["Authorization"] == "Bearer sk-test-123"


# -- answers --------------------------------------------------------------------------------------------------


def test_usage_with_cached_tokens_and_finish_reason() -> None:
    script = Script()
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 96},
    }
    script.chat.append((200, _completion("cut off", finish="length", usage=usage)))
    with scripted_server(script) as url, engine_for(url) as engine:
        [gen] = engine.generate([_text_request("hi")])
    assert isinstance(gen, Generation)
    assert gen.text == "cut off" and gen.finish_reason == "length" and gen.model == "served"
    assert gen.usage == {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "cached_tokens": 96,
    }


def test_usage_without_details_has_no_cached_tokens() -> None:
    with fake_openai_server() as (url, _state), engine_for(url) as engine:
        [gen] = engine.generate([_judge_request("plain")])
    assert gen.usage == {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}


def test_a_json_200_that_is_no_completion_is_a_malformed_generation_not_retried() -> None:
    with fake_openai_server() as (url, state), engine_for(url) as engine:
        [gen] = engine.generate([_judge_request("garbage")])
    assert gen.finish_reason == "malformed"
    assert "upstream said something else" in gen.text
    assert state.calls["garbage"] == 1  # the server answered: not retried


def test_a_200_that_is_not_json_is_retried_then_unavailable() -> None:
    """A proxy's error page is not a model answer: retried like a 5xx (the workers' one HTTP policy)."""
    with (
        fake_openai_server() as (url, state),
        engine_for(url) as engine,
        pytest.raises(BackendUnavailable, match="not JSON"),
    ):
        engine.generate([_judge_request("not-json")])
    assert state.calls["not-json"] == engine.config.max_attempts


@pytest.mark.parametrize(
    "payload",
    [
        {"error": {"message": "oops"}},
        {"choices": []},
        {"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]},
        {"choices": [{"message": {"role": "assistant", "content": [{"type": "text"}]}}]},
        [1, 2, 3],
        "just a string",
    ],
)
def test_json_200_that_is_not_a_completion_is_malformed(payload: Any) -> None:
    script = Script()
    script.chat.append((200, json.dumps(payload)))
    with scripted_server(script) as url, engine_for(url) as engine:
        [gen] = engine.generate([_text_request("hi")])
    assert gen.finish_reason == "malformed"
    assert script.posts == 1


def test_malformed_generation_is_invalid_for_the_protocols() -> None:
    with fake_openai_server() as (url, _state), engine_for(url) as engine:
        [gen] = engine.generate([_judge_request("garbage")])
    for name in ("pigreward-v1", "json-v1"):
        result = get_protocol(name).parse(gen)
        assert result.outcome == "invalid" and result.invalid_reason == "malformed_response"


# -- retries and failures ------------------------------------------------------------------------------------------


def test_429_and_503_are_retried_then_succeed() -> None:
    script = Script()
    script.chat += [(429, {"error": "rate limited"}), (503, {"error": "overloaded"})]
    with scripted_server(script) as url, engine_for(url, max_attempts=3) as engine:
        [gen] = engine.generate([_text_request("persist")])
    assert gen.text == "echo: persist" and gen.finish_reason == "stop"
    assert script.posts == 3


def test_fake_server_flaky_503_is_retried() -> None:
    with fake_openai_server() as (url, state), engine_for(url, max_attempts=4) as engine:
        [gen] = engine.generate([_judge_request("flaky-503")])
    assert gen.finish_reason == "stop" and "is better" in gen.text
    assert state.calls["flaky-503"] == 3


def test_retries_exhausted_on_5xx_is_unavailable() -> None:
    script = Script()
    script.chat += [(503, {"error": "overloaded"})] * 5
    with (
        scripted_server(script) as url,
        engine_for(url, max_attempts=3) as engine,
        pytest.raises(BackendUnavailable) as info,
    ):
        engine.generate([_text_request("x")])
    assert isinstance(info.value, TransientError)
    assert "503" in info.value.message
    assert script.posts == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_error_is_rejected_immediately(status: int) -> None:
    script = Script()
    script.chat.append((status, {"error": {"message": "context length exceeded"}}))
    with (
        scripted_server(script) as url,
        engine_for(url, max_attempts=4) as engine,
        pytest.raises(BackendRejected) as info,
    ):
        engine.generate([_text_request("too long")])
    assert str(status) in info.value.message
    assert "context length exceeded" in info.value.message
    assert script.posts == 1


def test_server_that_never_answers_is_unavailable_after_max_attempts() -> None:
    script = Script()
    script.chat += [("hang",)] * 3
    with scripted_server(script) as url, engine_for(url, read_timeout_s=0.2, max_attempts=3) as engine:
        engine.identity("judge")  # /v1/models answers at once
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            engine.generate([_text_request("slow")])
        elapsed = time.monotonic() - started
    assert "timeout" in info.value.message.lower()
    assert script.posts == 3
    assert elapsed < 3.0


def test_closed_port_is_unavailable_after_max_attempts() -> None:
    url = _closed_url()
    with engine_for(url, max_attempts=2, connect_timeout_s=0.5) as engine:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            engine.generate([_text_request("anyone?")])
        with pytest.raises(BackendUnavailable):
            engine.identity("judge")
        assert time.monotonic() - started < 5.0
    assert "2 attempts" in info.value.message


# -- concurrency --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("threads", "per_call"), [(12, 1), (3, 4), (6, 2)])
def test_max_in_flight_is_never_exceeded(threads: int, per_call: int) -> None:
    with fake_openai_server(delay=0.08) as (url, state), engine_for(url, max_in_flight=4) as engine:
        results: list[list[Generation]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads)

        def work(t: int) -> None:
            try:
                barrier.wait()
                reqs = [_judge_request(f"t{t}-r{i}") for i in range(per_call)]
                gens = engine.generate(reqs)
                with state.lock:
                    results.append(gens)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(20)
    assert not errors
    assert sum(len(r) for r in results) == 12
    assert all(g.finish_reason == "stop" for r in results for g in r)
    assert sum(state.calls.values()) == 12
    assert state.max_in_flight <= 4
    assert state.max_in_flight >= 2  # requests really overlap


# -- readiness -------------------------------------------------------------------------------------------------


def test_ready_true_when_health_answers() -> None:
    with fake_openai_server() as (url, _state), engine_for(url) as engine:
        assert engine.ready() is True
        assert engine.ready("reasoner") is True


def test_ready_falls_back_to_models_listing() -> None:
    script = Script()
    script.health_status = 404
    with scripted_server(script) as url, engine_for(url) as engine:
        assert engine.ready() is True
    assert script.gets["/health"] == 1 and script.gets["/v1/models"] == 1


def test_ready_false_while_loading_or_down() -> None:
    script = Script()
    script.health_status = 503
    script.models_status = 503
    with scripted_server(script) as url, engine_for(url) as engine:
        assert engine.ready() is False
    with engine_for(_closed_url(), connect_timeout_s=0.5) as engine:
        assert engine.ready() is False


def test_ready_checks_the_reasoner_server() -> None:
    with fake_openai_server() as (url, _state), engine_for(url, reasoner_url=_closed_url()) as engine:
        assert engine.ready("judge") is True
        assert engine.ready("reasoner") is False


@pytest.mark.parametrize(
    ("dialect", "kind", "expected"),
    [
        ("sglang", "ebnf", {"ebnf": 'root ::= "x"'}),
        ("sglang", "regex", {"regex": "x+"}),
        ("vllm", "ebnf", {"structured_outputs": {"grammar": 'root ::= "x"'}}),
        ("vllm", "regex", {"structured_outputs": {"regex": "x+"}}),
    ],
)
def test_grammars_are_spelled_as_each_server_takes_them(
    dialect: str, kind: str, expected: dict[str, Any]
) -> None:
    script = Script()
    text = 'root ::= "x"' if kind == "ebnf" else "x+"
    request = _text_request("a")
    request = GenerationRequest(
        messages=request.messages, sampling=request.sampling, grammar=Grammar(kind, text)
    )  # type: ignore[arg-type]
    with scripted_server(script) as url, engine_for(url, dialect=dialect) as engine:
        engine.generate([request])
    [body] = script.bodies
    for key, value in expected.items():
        assert body[key] == value
    assert not ({"ebnf", "regex", "structured_outputs"} - set(expected)) & set(body)


def test_served_name_carries_the_weights_revision_and_the_context_length() -> None:
    script = Script(
        models=[{"id": "pigreward-judge@3f2a9c1b7d0e", "root": "/weights/judge", "max_model_len": 8192}]
    )
    with scripted_server(script) as url, engine_for(url, judge_model="pigreward-judge") as engine:
        assert engine.identity("judge") == ModelIdentity("pigreward-judge", "3f2a9c1b7d0e")
        assert engine.context_length("judge") == 8192
        engine.generate([_text_request("a")])
    assert script.bodies[0]["model"] == "pigreward-judge@3f2a9c1b7d0e"  # vLLM wants the served id exactly


def test_a_plain_path_without_a_revision_is_unknown() -> None:
    script = Script(models=[{"id": "/weights/judge", "root": "/weights/judge"}])
    with scripted_server(script) as url, engine_for(url) as engine:
        assert engine.identity("judge").revision == "unknown"
        assert engine.context_length("judge") is None


# -- log-probabilities ----------------------------------------------------------------------------------------


def _entry(token: str, logprob: float, top: list[tuple[str, float]]) -> dict[str, Any]:
    """One `choices[0].logprobs.content` entry as SGLang and vLLM write it (with `bytes`)."""
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
    }


_VERDICT_LOGPROBS = {
    "content": [
        _entry("Image", -0.01, [("Image", -0.01), ("The", -4.8)]),
        _entry(" ", -0.02, [(" ", -0.02)]),
        _entry("2", -0.35, [("2", -0.35), ("1", -1.2), (" two", -6.0)]),
        _entry(" is", -0.001, [(" is", -0.001)]),
        _entry(" better", -0.003, [(" better", -0.003), (" preferred", -7.5)]),
    ]
}


@pytest.mark.parametrize("dialect", ["sglang", "vllm"])
def test_logprobs_are_asked_for_only_when_the_request_says_so(dialect: str) -> None:
    script = Script()
    with scripted_server(script) as url, engine_for(url, dialect=dialect) as engine:
        engine.generate([_text_request("a")])
        engine.generate([replace(_text_request("b"), top_logprobs=5)])
    plain, asked = script.bodies
    assert "logprobs" not in plain and "top_logprobs" not in plain
    assert asked["logprobs"] is True and asked["top_logprobs"] == 5  # the same two fields for both


def test_logprobs_of_a_realistic_answer_are_read_per_token() -> None:
    script = Script()
    answer = _completion("Image 2 is better")
    answer["choices"][0]["logprobs"] = _VERDICT_LOGPROBS
    script.chat.append((200, answer))
    with scripted_server(script) as url, engine_for(url) as engine:
        [gen] = engine.generate([replace(_text_request("a"), top_logprobs=3)])
    assert gen.text == "Image 2 is better" and gen.finish_reason == "stop"
    assert gen.logprobs is not None and "".join(t.token for t in gen.logprobs) == gen.text
    digit = gen.logprobs[2]
    assert digit == TokenLogprob(token="2", logprob=-0.35, top_logprobs={"2": -0.35, "1": -1.2, " two": -6.0})
    assert gen.logprobs[1].top_logprobs == {" ": -0.02}


def test_the_completions_form_of_logprobs_is_read_too() -> None:
    legacy = {
        "tokens": ["Image", " 1"],
        "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{"Image": -0.1}, {" 1": -0.2, " 2": -1.9}],
        "text_offset": [0, 5],
    }
    assert parse_logprobs(legacy) == [
        TokenLogprob(token="Image", logprob=-0.1, top_logprobs={"Image": -0.1}),
        TokenLogprob(token=" 1", logprob=-0.2, top_logprobs={" 1": -0.2, " 2": -1.9}),
    ]


def _with_content(*entries: Any) -> dict[str, Any]:
    return {"content": list(entries)}


@pytest.mark.parametrize(
    "logprobs",
    [
        None,  # not returned
        {},
        {"content": None},  # vLLM's "no content logprobs"
        {"content": "Image 2"},
        [],
        "yes",
        _with_content({"token": "Image", "logprob": "-0.1", "top_logprobs": []}),  # a string number
        _with_content({"token": "Image", "logprob": True, "top_logprobs": []}),
        _with_content({"token": "Image", "logprob": 0.7, "top_logprobs": []}),  # not a log-probability
        _with_content({"token": "Image", "logprob": float("nan"), "top_logprobs": []}),
        _with_content({"token": 17, "logprob": -0.1, "top_logprobs": []}),
        _with_content({"logprob": -0.1, "top_logprobs": []}),  # no token
        _with_content({"token": "Image", "logprob": -0.1, "top_logprobs": "Image"}),
        _with_content({"token": "Image", "logprob": -0.1, "top_logprobs": [{"token": "x"}]}),
        _with_content(_entry("Image", -0.1, []), "not an entry"),  # one bad entry spoils the list
        {"tokens": ["Image"], "token_logprobs": [-0.1, -0.2]},  # lists of different lengths
    ],
)
def test_malformed_logprobs_are_none_and_never_cost_the_generation(logprobs: Any) -> None:
    script = Script()
    answer = _completion("Image 2 is better", finish="stop")
    answer["choices"][0]["logprobs"] = logprobs
    script.chat.append((200, answer))
    with scripted_server(script) as url, engine_for(url) as engine:
        [gen] = engine.generate([replace(_text_request("a"), top_logprobs=5)])
    assert gen.text == "Image 2 is better" and gen.finish_reason == "stop" and gen.logprobs is None
    assert gen.usage["completion_tokens"] == 2


def test_impossible_alternatives_read_as_openais_floor() -> None:
    """-Infinity is not JSON, but Python's encoder writes it: read as -9999.0, as OpenAI spells it."""
    [token] = parse_logprobs(_with_content(_entry("1", -0.1, [("1", -0.1), ("2", float("-inf"))]))) or []
    assert token.top_logprobs == {"1": -0.1, "2": -9999.0}
