"""Request metrics of the API process: counts and latency by route template and status."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("pigreward_api_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram("pigreward_api_request_seconds", "API request latency", ["method", "route"])


def route_template(scope: Scope) -> str:
    """The request path with its path parameters put back as `{name}` (bounded label values)."""
    values = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    return "/".join(f"{{{values[part]}}}" if part in values else part for part in scope["path"].split("/"))


class RequestMetrics:
    """Labels use the route template (`/v1/judgments/{judgment_id}`), never the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            template = route_template(scope) if scope.get("route") is not None else "unmatched"
            REQUESTS.labels(scope["method"], template, str(status["code"])).inc()
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
