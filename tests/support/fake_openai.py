"""The stub LVLM server (`bench.stub_lvlm`) scripted for client tests: failures picked by the prompt.

`flaky-503` answers 503 to its first two judge calls; `garbage` answers a 200 whose JSON is not a
chat completion; `not-json` answers a 200 whose body is not JSON at all (a proxy's error page);
everything else answers a well-formed pigreward-v1 judgment after `delay` seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.stub_lvlm import StubState, stub_lvlm_server


def scripted(prompt: str, call: int, reasoner: bool) -> tuple[int, Any] | None:
    if reasoner:
        return None
    if prompt == "flaky-503" and call <= 2:
        return 503, {"error": "overloaded"}
    if prompt == "garbage":
        return 200, {"error": {"message": "upstream said something else"}}
    if prompt == "not-json":
        return 200, "<html>upstream proxy error</html>"
    return None


@contextmanager
def fake_openai_server(delay: float = 0.0) -> Iterator[tuple[str, StubState]]:
    with stub_lvlm_server(delay, scripted) as (url, state):
        yield url, state
