"""`ops/openai_server.py` and log-probabilities, with a stub engine: what is asked of the engine, what
the answer carries (OpenAI's chat form), and a server started without them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient

from ops.openai_server import ServerOptions, create_app
from workers.generation import Generation, GenerationRequest, ModelIdentity, TokenLogprob
from workers.imaging import ImageLimits


class _Engine:
    """Answers "Image 1" with per-token log-probabilities when asked; records the requests."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            tokens = [
                TokenLogprob(token="Image", logprob=-0.05, top_logprobs={"Image": -0.05, "The": -3.1}),
                TokenLogprob(
                    token=" 1",
                    logprob=-0.4,
                    top_logprobs={" 2": -1.3, " 1": -0.4, " one": -5.0, "\ufffd": -math.inf},
                ),
            ]
            out.append(
                Generation(
                    text="Image 1",
                    finish_reason="stop",
                    usage={"prompt_tokens": 9, "completion_tokens": 2},
                    logprobs=tokens if r.top_logprobs > 0 else None,
                )
            )
        return out

    def identity(self, role: Literal["judge", "reasoner"]) -> ModelIdentity:
        return ModelIdentity("tiny", "r0")

    def context_length(self, role: Literal["judge", "reasoner"]) -> int | None:
        return None

    def close(self) -> None:
        pass


def _client(engine: _Engine, **options: Any) -> TestClient:
    return TestClient(create_app(engine, {"tiny": "judge"}, ImageLimits(), ServerOptions(**options)))


def _ask(client: TestClient, **fields: Any) -> Any:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "which?"}], "max_tokens": 4, **fields}
    return client.post("/v1/chat/completions", json=body)


def test_logprobs_come_back_in_openais_chat_form() -> None:
    engine = _Engine()
    answer = _ask(_client(engine), logprobs=True, top_logprobs=2)
    assert answer.status_code == 200, answer.text
    assert engine.requests[-1].top_logprobs == 2
    content = answer.json()["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["Image", " 1"]
    digit = content[1]
    assert digit["logprob"] == -0.4 and digit["bytes"] == [32, 49]
    # the `top_logprobs` most likely alternatives, most likely first, each with its bytes
    assert digit["top_logprobs"] == [
        {"token": " 1", "logprob": -0.4, "bytes": [32, 49]},
        {"token": " 2", "logprob": -1.3, "bytes": [32, 50]},
    ]


def test_logprobs_without_alternatives_and_impossible_tokens_as_openais_floor() -> None:
    engine = _Engine()
    answer = _ask(_client(engine), logprobs=True)  # no top_logprobs: the tokens' own only
    content = answer.json()["choices"][0]["logprobs"]["content"]
    assert engine.requests[-1].top_logprobs == 1  # the engine is asked with > 0
    assert all(c["top_logprobs"] == [] for c in content)
    answer = _ask(_client(engine), logprobs=True, top_logprobs=20)
    floor = answer.json()["choices"][0]["logprobs"]["content"][1]["top_logprobs"][-1]
    assert floor == {"token": "\ufffd", "logprob": -9999.0, "bytes": [239, 191, 189]}  # JSON has no -inf


def test_not_asked_means_null_and_not_computed() -> None:
    engine = _Engine()
    answer = _ask(_client(engine))
    assert answer.json()["choices"][0]["logprobs"] is None
    assert engine.requests[-1].top_logprobs == 0


def test_a_server_without_logprobs_answers_null_even_when_asked() -> None:
    engine = _Engine()
    answer = _ask(_client(engine, logprobs=False), logprobs=True, top_logprobs=5)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["logprobs"] is None
    assert engine.requests[-1].top_logprobs == 0  # not even computed


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"top_logprobs": 3}, "`logprobs` must be set to true"),  # as vLLM refuses it
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ],
)
def test_inconsistent_logprob_fields_are_refused(fields: dict[str, Any], message: str) -> None:
    answer = _ask(_client(_Engine()), **fields)
    assert answer.status_code in (400, 422) and message in answer.text
