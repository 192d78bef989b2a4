"""A scripted OpenAI-compatible image server: `POST /v1/images/generations` and `GET /v1/models`.

Real HTTP on 127.0.0.1 (stdlib ThreadingHTTPServer). By default it answers with the procedural
image for (prompt, seed) (`workers.optimization.generators.render_png`) as `b64_json`, so the response
depends on the prompt's modifier phrases exactly as `ProceduralGenerator` does. Scripting, on the
yielded state (change it between calls):

* `fail_first = N`, `fail_status = 503`: the first N generation calls answer `fail_status`;
* `not_image = True`: answer valid base64 that is not an image;
* `no_models = True`: `GET /v1/models` answers 404.

Every generation request body is recorded in `state.bodies`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ops.stack import free_port
from workers.optimization.generators import render_png

MODEL = "fake-diffusion"
NOT_AN_IMAGE = b"this is plain text, not a PNG"


class ImageServerState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.calls = 0
        self.fail_first = 0
        self.fail_status = 503
        self.not_image = False
        self.no_models = False


def _size(value: Any) -> int:
    """The width of a "WxH" size (the drawing is square), clamped to [16, 1024]; 64 if unreadable."""
    try:
        width = int(str(value).lower().split("x")[0])
    except ValueError:
        return 64
    return max(16, min(1024, width))


def _handler(state: ImageServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models" and not state.no_models:
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/v1/images/generations":
                self._send(404, {"error": "not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.calls += 1
                call = state.calls
                state.bodies.append(body)
            if call <= state.fail_first:
                self._send(state.fail_status, {"error": {"message": f"scripted {state.fail_status}"}})
                return
            if not isinstance(body.get("prompt"), str) or not body["prompt"]:
                self._send(400, {"error": {"message": "prompt is required"}})
                return
            if state.not_image:
                data = NOT_AN_IMAGE
            else:
                data = render_png(body["prompt"], int(body.get("seed") or 0), _size(body.get("size")))
            self._send(200, {"created": 0, "data": [{"b64_json": base64.b64encode(data).decode()}]})

    return Handler


@contextmanager
def fake_image_server() -> Iterator[tuple[str, ImageServerState]]:
    """Yields (base URL, state); the server stops on exit."""
    state = ImageServerState()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
