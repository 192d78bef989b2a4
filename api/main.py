"""The thin REST submit API: validate, authorize, write ledger rows, enqueue, read back.

uvicorn api.main:app        or        pigreward api --port 8000
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ApiState
from api.metrics import RequestMetrics
from api.routes import health, judgments, users, viewer
from core.settings import get_settings
from tasks.metrics import CONTENT_TYPE_LATEST, render_latest

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413), declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI answers 413 even when it hits while parsing a JSON body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail": "request body over {limit} bytes"}}'.encode()
    await send(
        {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="pigreward",
        version="0.1.0",
        summary="Personalized pairwise judging of text-to-image outputs (PIGReward) as a batch job queue.",
    )
    app.state.pigreward = ApiState.from_settings(settings)
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    app.add_middleware(RequestMetrics)
    app.include_router(health.router)
    app.include_router(users.router, prefix="/v1")
    app.include_router(judgments.router, prefix="/v1")
    app.include_router(viewer.router)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        """A lost or refused database connection is the server's outage, not the client's fault:
        503 with Retry-After (the pool is invalidated, so the next request reconnects)."""
        log.warning(
            "%s %s: database error answered 503: %s", request.method, request.url.path, exc.orig or exc
        )
        return JSONResponse(
            {"detail": "database unavailable, retry shortly"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics of this API process (workers serve their own on PIGREWARD_METRICS_PORT)."""
        return Response(render_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
