"""A stand-in for an LVLM server: OpenAI-compatible, answers after a fixed delay, counts what is in flight.

Real HTTP on 127.0.0.1 (stdlib ThreadingHTTPServer), so a client's pool, concurrency and timeouts
are exercised for real without a GPU. `GET /health`, `GET /v1/models` (one model, `stub-judge`, served
from an HF-snapshot-like path) and `POST /v1/chat/completions`: a reasoner request (its text holds
"(chosen)") gets a fixed rationale; a judge request a well-formed pigreward-v1 verdict preferring the
image whose data URL sorts first, so both orders of a pair agree. The feeding benchmark measures a
worker against it; `script` lets a caller answer some requests differently (tests script failures).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ops.stack import free_port

VERDICT = """Warm palette: Image {w} has the amber light this user favours. (Score 1: {a1}, Score 2: {b1})
Clean composition: both are tidy. (Score 1: 3, Score 2: 3)
Score 1: {a1}+3={ta}
Score 2: {b1}+3={tb}
Image {w} is better"""
RATIONALE = "This user prefers warm, amber light and tidy compositions."

Script = Callable[[str, int, bool], "tuple[int, Any] | None"]
"""(judgment prompt, how many calls that prompt has had, is a reasoner request) -> (status, body) to
answer instead, or None for the normal answer."""


LOOP = "Score 1: 2\nScore 2: 2\n" * 40
"""What a looping model writes until its token limit (the released checkpoint's known failure)."""


@dataclass
class Faults:
    """A misbehaving server: the share of requests answered 503, held with no answer until `hang_s`
    (or until healed), answered 200 with a proxy's error page, or with a looping model's text."""

    unavailable: float = 0.0
    hang: float = 0.0
    garbage: float = 0.0
    loop: float = 0.0
    hang_s: float = 3600.0

    def pick(self, roll: float, reasoner: bool) -> str | None:
        """The fault for a uniform `roll` in [0, 1), or None (a normal answer); rationales do not loop."""
        for kind, share in (
            ("unavailable", self.unavailable),
            ("hang", self.hang),
            ("garbage", self.garbage),
        ):
            if roll < share:
                return kind
            roll -= share
        return "loop" if not reasoner and roll < self.loop else None


class StubState:
    """What the server saw, for the caller to read: calls per prompt, bodies, requests in flight."""

    def __init__(self, delay: float, script: Script | None = None, faults: Faults | None = None) -> None:
        self.delay = delay
        self.script = script
        self.faults = faults
        self.rng = random.Random(0)
        self.healed = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()  # faults served, by kind
        self.bodies: list[dict[str, Any]] = []

    def heal(self) -> None:
        """The server is fixed (restarted): no more faults; requests held meanwhile are cut off."""
        self.faults = None
        self.healed.set()

    def fault(self, reasoner: bool) -> str | None:
        with self.lock:
            faults = self.faults
            kind = faults.pick(self.rng.random(), reasoner) if faults is not None else None
            if kind:
                self.served[kind] += 1
            return kind


def _read_request(body: dict[str, Any]) -> tuple[str, list[str], bool]:
    """(the judgment prompt after 'Prompt:', image data URLs, is a reasoner request)."""
    text, images = "", []
    for message in body.get("messages", []):
        content = message.get("content")
        parts: list[dict[str, Any]] = (
            [{"type": "text", "text": content}] if isinstance(content, str) else content
        )
        for part in parts:
            if part.get("type") == "text":
                text += part["text"]
            elif part.get("type") == "image_url":
                images.append(part["image_url"]["url"])
    found = re.search(r"Prompt: (.*)", text)
    return (found.group(1).strip() if found else ""), images, "(chosen)" in text


def completion(model: str, text: str) -> dict[str, Any]:
    """An OpenAI chat completion carrying `text`."""
    return {
        "id": "stub",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140},
    }


def _answer(images: list[str], reasoner: bool) -> str:
    if reasoner:
        return RATIONALE
    first_wins = images[0] <= images[1]
    a1, b1 = (4, 2) if first_wins else (2, 4)
    return VERDICT.format(w=1 if first_wins else 2, a1=a1, b1=b1, ta=a1 + 3, tb=b1 + 3)


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any) -> None:
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._send(200, {"data": [{"id": "stub-judge", "root": "/models/snapshots/abc1234def/"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt, images, reasoner = _read_request(body)
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.calls[prompt] += 1
                call = state.calls[prompt]
                state.bodies.append(body)
            try:
                time.sleep(state.delay)
                scripted = state.script(prompt, call, reasoner) if state.script else None
                fault = None if scripted is not None else state.fault(reasoner)
                if scripted is not None:
                    self._send(*scripted)
                elif fault == "unavailable":
                    self._send(503, {"error": "overloaded"})
                elif fault == "hang":
                    state.healed.wait(state.faults.hang_s if state.faults else 0)
                    self.close_connection = True  # no answer at all: the connection is simply cut
                elif fault == "garbage":
                    self._send(200, "<html><body>502 Bad Gateway</body></html>")
                else:
                    text = LOOP if fault == "loop" else _answer(images, reasoner)
                    self._send(200, completion(body.get("model", ""), text))
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@contextmanager
def stub_lvlm_server(
    delay: float = 0.0, script: Script | None = None, faults: Faults | None = None
) -> Iterator[tuple[str, StubState]]:
    """The server on a free port for the block: (base URL, its state)."""
    state = StubState(delay, script, faults)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
