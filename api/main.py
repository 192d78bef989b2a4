"""The thin REST submit API: validate, authorize, write ledger rows, enqueue, read back.

uvicorn api.main:app        or        pigreward api --port 8000
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ApiState
from api.metrics import RequestMetrics
from api.routes import health, judgments, users, viewer
from core.errors import BrokerUnavailable, ConfigurationError, TransientError
from core.scope import OutOfScope
from core.settings import get_settings
from tasks.metrics import CONTENT_TYPE_LATEST, render_latest

log = logging.getLogger(__name__)


SECRET_QUERY = re.compile(r"([?&](?:key|api_key|token)=)[^&\s]*", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Keys in query strings (`/ui/login?key=...`) never reach the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = SECRET_QUERY.sub(r"\1***", record.msg)
        return True


def _redact_access_log() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())


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


METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """The methods some route fully matches for this path (routers included, at any depth)."""
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in app.router.routes
        )
    ]
    return ", ".join(allowed)


def create_app() -> FastAPI:
    settings = get_settings()
    _redact_access_log()
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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """FastAPI's answer, except that a 405 lists in `Allow` every method of the path, not only
        those of the first route that matched it."""
        if exc.status_code == 405:
            allowed = _allowed_methods(app, request)
            return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allowed})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field and rule, without echoing the input back (it may be huge, binary or
        not encodable: an unpaired surrogate would turn the answer itself into a 500)."""
        detail = [
            {
                "type": e.get("type", "value_error"),
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)

    def unavailable(request: Request, what: str, exc: BaseException, retry_after: int) -> JSONResponse:
        log.warning("%s %s: %s unavailable, answered 503: %s", request.method, request.url.path, what, exc)
        return JSONResponse(
            {"detail": f"{what} unavailable, retry shortly"},
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )

    @app.exception_handler(TransientError)
    async def transient(request: Request, exc: TransientError) -> JSONResponse:
        """The image store, broker or a backend failing for now (a row already written stays and is
        sent again by the sweeper; the same request again returns the same judgment)."""
        what = "broker" if isinstance(exc, BrokerUnavailable) else "image store"
        return unavailable(request, what, exc, 5)

    @app.exception_handler(ConfigurationError)
    async def misconfigured(request: Request, exc: ConfigurationError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse(
            {"detail": "the service is misconfigured (its operator is told in the log); retry later"},
            status_code=503,
            headers={"Retry-After": "60"},
        )

    @app.exception_handler(KombuOperationalError)
    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(ConnectionError)
    async def broker_down(request: Request, exc: Exception) -> JSONResponse:
        return unavailable(request, "broker", exc, 5)

    @app.exception_handler(OutOfScope)
    async def out_of_scope(request: Request, exc: OutOfScope) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics of this API process (workers serve their own on PIGREWARD_METRICS_PORT)."""
        return Response(render_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
