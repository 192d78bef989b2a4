"""The workers' one HTTP client and its retry policy, against a real local server answering a script."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from core.errors import BackendRejected, BackendUnavailable
from workers.http import JSONClient, RetryPolicy, retryable_status

FAST = RetryPolicy(max_attempts=3, backoff_s=0.001, backoff_max_s=0.002)


@contextmanager
def scripted(answers: list[tuple[int, str, float]]) -> Iterator[tuple[str, list[str]]]:
    """A server answering (status, body, delay) in turn (the last one repeats); yields (url, paths seen)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            seen.append(self.path)
            status, body, delay = answers[min(len(seen), len(answers)) - 1]
            time.sleep(delay)
            raw = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = _answer  # noqa: N815

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer()

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that timed out closed the socket first: expected here

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "retried"),
    [(408, True), (409, True), (425, True), (429, True), (500, True), (501, True), (503, True), (599, True)]
    + [(400, False), (401, False), (404, False), (413, False), (422, False)],
)
def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    assert retryable_status(status) is retried


def test_pauses_grow_but_stay_under_the_cap() -> None:
    policy = RetryPolicy(max_attempts=6, backoff_s=0.5, backoff_max_s=2.0)
    assert policy.pause(0) == 0.0
    for attempt in range(1, 6):
        for _ in range(50):
            assert 0.0 <= policy.pause(attempt) <= min(2.0, 0.5 * 2 ** (attempt - 1))


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_server_error_then_an_answer_is_one_success() -> None:
    with scripted([(503, "busy", 0), (200, json.dumps({"ok": 1}), 0)]) as (url, seen):
        client = JSONClient(policy=FAST)
        assert client.request("POST", url + "/x", {"a": 1}) == {"ok": 1}
        client.close()
    assert len(seen) == 2


def test_a_refusal_is_not_retried() -> None:
    with scripted([(404, "no such model", 0)]) as (url, seen):
        client = JSONClient(policy=FAST)
        with pytest.raises(BackendRejected, match="HTTP 404: no such model"):
            client.request("GET", url + "/v1/models")
    assert len(seen) == 1


def test_a_body_that_is_not_json_is_retried_then_unavailable() -> None:
    with scripted([(200, "<html>bad gateway</html>", 0)]) as (url, seen):
        client = JSONClient(policy=FAST)
        with pytest.raises(BackendUnavailable, match="after 3 attempts.*not JSON"):
            client.request("GET", url + "/v1/models")
    assert len(seen) == 3


def test_a_server_that_never_answers_in_time_is_unavailable() -> None:
    with scripted([(200, "{}", 1.0)]) as (url, seen):
        client = JSONClient(policy=RetryPolicy(max_attempts=2, backoff_s=0.001), timeout_s=0.2)
        with pytest.raises(BackendUnavailable, match="timeout"):
            client.request("GET", url + "/slow")
    assert len(seen) == 2


def test_an_unreachable_server_is_unavailable_and_status_says_none() -> None:
    with scripted([(200, "{}", 0)]) as (url, _):
        pass  # the server is gone: its port refuses connections
    client = JSONClient(policy=FAST, connect_timeout_s=0.5)
    with pytest.raises(BackendUnavailable, match="connection error"):
        client.request("GET", url + "/health")
    assert client.status(url + "/health") is None


def test_in_flight_requests_never_exceed_the_bound() -> None:
    with scripted([(200, "{}", 0.1)]) as (url, seen):
        client = JSONClient(policy=FAST, max_in_flight=2)
        started = time.perf_counter()
        threads = [threading.Thread(target=client.request, args=("GET", url + "/x")) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    assert len(seen) == 6
    assert elapsed >= 0.29  # six 0.1 s requests, two at a time: three waves
