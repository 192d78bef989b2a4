"""The one HTTP client of the workers: JSON over HTTP with timeouts, a pool and one retry policy.

Everything the workers ask of a model server goes through `JSONClient`: the LVLM engine (SGLang or
any OpenAI-compatible server, and so the LLM rewriter) and the OpenAI-compatible image generator.
One policy for all of them, so they cannot drift apart:

- retried, with exponential backoff and full jitter, up to `RetryPolicy.max_attempts` tries in all:
  connection errors, timeouts, HTTP 408/409/425/429 and every 5xx, and a 2xx whose body is not
  JSON (a proxy's or load balancer's error page: the model never answered);
- other 4xx: `BackendRejected` (the server refused this request; retrying cannot help);
- attempts used up: `BackendUnavailable` (a `TransientError`: the task retries later).

What a JSON answer *means* (a chat completion, an image) is the caller's to read.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import httpx

from core.errors import BackendRejected, BackendUnavailable


def retryable_status(status: int) -> bool:
    """Statuses worth another try: timeouts, conflicts, too early, throttling, any server error."""
    return status in (408, 409, 425, 429) or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to try one request. Units: seconds."""

    max_attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def pause(self, attempt: int) -> float:
        """Seconds to wait before try number `attempt` (0-based; 0 waits nothing): full jitter."""
        if attempt <= 0:
            return 0.0
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


class JSONClient:
    """A thread-safe JSON client. `max_in_flight` bounds the requests open at once (None: no bound);
    a slot is held only while a request is on the wire, never during a backoff pause."""

    def __init__(
        self,
        *,
        policy: RetryPolicy | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        api_key: str | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.connect_timeout_s = connect_timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = (
            httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
            if max_in_flight
            else httpx.Limits()
        )
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), limits=limits
        )
        self._slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None

    def request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """The parsed JSON answer, after retries (see the module docstring for the policy)."""
        last = ""
        for attempt in range(self.policy.max_attempts):
            time.sleep(self.policy.pause(attempt))
            try:
                with self._slot():
                    response = self._client.request(method, url, json=body)
            except httpx.TimeoutException as exc:
                last = f"timeout: {exc}"
                continue
            except httpx.TransportError as exc:
                last = f"connection error: {exc}"
                continue
            if retryable_status(response.status_code):
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise BackendRejected(f"{method} {url}: HTTP {response.status_code}: {response.text[:500]}")
            try:
                return response.json()
            except ValueError:
                last = f"HTTP {response.status_code} with a body that is not JSON: {response.text[:200]}"
        raise BackendUnavailable(f"{method} {url} failed after {self.policy.max_attempts} attempts ({last})")

    def status(self, url: str) -> int | None:
        """The status of one plain GET (no retries), or None if the server cannot be reached."""
        try:
            return self._client.get(url, timeout=self.connect_timeout_s).status_code
        except httpx.HTTPError:
            return None

    def close(self) -> None:
        self._client.close()

    def _slot(self) -> AbstractContextManager[object]:
        return self._slots if self._slots is not None else nullcontext()
