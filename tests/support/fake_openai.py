"""A scripted OpenAI-compatible HTTP server for client tests: latency, failures, concurrency counting.

Real HTTP on 127.0.0.1 (stdlib ThreadingHTTPServer), so the client's retries, timeouts and
connection pool are exercised for real. Behaviour is picked by the judgment prompt:
`flaky-503` answers 503 to its first two calls, `garbage` answers a non-JSON 200; everything else
answers a well-formed pigreward-v1 judgment after `delay` seconds, preferring the image whose data
URL sorts first (so both orders agree).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.services import free_port

VERDICT = """Warm palette: Image {w} has the amber light this user favours. (Score 1: {a1}, Score 2: {b1})
Clean composition: both are tidy. (Score 1: 3, Score 2: 3)
Score 1: {a1}+3={ta}
Score 2: {b1}+3={tb}
Image {w} is better"""


class FakeState:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []


def _judgment_prompt(body: dict[str, Any]) -> tuple[str, list[str], bool]:
    text, images = "", []
    for message in body.get("messages", []):
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part.get("type") == "text":
                text += part["text"]
            elif part.get("type") == "image_url":
                images.append(part["image_url"]["url"])
    found = re.search(r"Prompt: (.*)", text)
    return (found.group(1).strip() if found else ""), images, "(chosen)" in text


def _handler(state: FakeState) -> type[BaseHTTPRequestHandler]:
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
                self._send(200, {"data": [{"id": "fake-judge", "root": "/models/snapshots/abc1234def/"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt, images, reasoner = _judgment_prompt(body)
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.calls[prompt] += 1
                call = state.calls[prompt]
                state.bodies.append(body)
            try:
                time.sleep(state.delay)
                if prompt == "flaky-503" and call <= 2 and not reasoner:
                    self._send(503, {"error": "overloaded"})
                    return
                if prompt == "garbage" and not reasoner:
                    self._send(200, "<html>upstream proxy error</html>")
                    return
                if reasoner:
                    text = "This user prefers warm, amber light and tidy compositions."
                else:
                    first_wins = images[0] <= images[1]
                    a1, b1 = (4, 2) if first_wins else (2, 4)
                    text = VERDICT.format(w=1 if first_wins else 2, a1=a1, b1=b1, ta=a1 + 3, tb=b1 + 3)
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140},
                    },
                )
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@contextmanager
def fake_openai_server(delay: float = 0.0) -> Iterator[tuple[str, FakeState]]:
    state = FakeState(delay)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
