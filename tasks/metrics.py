"""Prometheus metrics of a worker process: judgments, parse failures, stage and task times, tokens.

Two sources feed them: the pipeline's observer (`PrometheusEvents`, set on `Resources.events` by
`tasks.runtime.build_resources`) reports every judgment run that ends (done, invalid, rejected or
failed); Celery signals time every task and count retries and failures.

A worker exposes them on `PIGREWARD_METRICS_PORT` (address `PIGREWARD_METRICS_ADDR`, default
127.0.0.1), served from the `worker_init` signal: one port per worker *process*. The default threads
pool (and solo) runs every task in that process, so its port shows everything. A prefork pool
(`--pool prefork`) runs tasks in forked children whose counters the parent never sees: run it with
`PROMETHEUS_MULTIPROC_DIR` set to an empty directory (set before the worker starts, cleared between
runs); the parent then serves the children's merged values and `render_latest` does the same for
any process on that host.

`render_latest()` gives the text exposition for an HTTP `/metrics` endpoint (the API's); note that
an API process counts only what runs in it: workers are scraped on their own ports.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
)
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from workers.pipeline import JudgmentEvent, PipelineEvents

log = logging.getLogger(__name__)

PORT_ENV = "PIGREWARD_METRICS_PORT"
ADDR_ENV = "PIGREWARD_METRICS_ADDR"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
TOKEN_KINDS = ("prompt_tokens", "completion_tokens", "cached_tokens")

__all__ = ["CONTENT_TYPE_LATEST", "OBSERVER", "PrometheusEvents", "render_latest", "start_metrics_server"]

# Seconds: from a cheap `lite` judgment to a long LVLM chunk (task time limit 1 h by default).
_TASK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Nightly batches sit in the queue for hours: up to a day.
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)

JUDGMENTS = Counter(
    "pigreward_judgments_total",
    "Judgment runs that ended, by backend, status (done, invalid, rejected, failed) and winner",
    ["backend", "status", "winner"],
)
PARSE_FAILURES = Counter(
    "pigreward_parse_failures_total",
    "Judgments stored invalid (the model answered outside the protocol), by reason",
    ["backend", "reason"],
)
TASK_SECONDS = Histogram(
    "pigreward_task_seconds", "Run time of a Celery task in the worker", ["task"], buckets=_TASK_BUCKETS
)
QUEUE_WAIT = Histogram(
    "pigreward_queue_wait_seconds",
    "Ledger row created to the first run started (first attempts only)",
    buckets=_WAIT_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "pigreward_stage_seconds",
    "Time of one pipeline stage of a finished judgment (context, images, backend)",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
BACKEND_TOKENS = Counter(
    "pigreward_backend_tokens_total",
    "Tokens the backend reported, by kind (prompt, completion, cached prompt)",
    ["backend", "kind"],
)
TASK_RETRIES = Counter("pigreward_task_retries_total", "Celery task retries", ["task"])
TASK_FAILURES = Counter("pigreward_task_failures_total", "Celery tasks that ended in an exception", ["task"])


class PrometheusEvents(PipelineEvents):
    """The pipeline observer that counts into the metrics above."""

    def judgment_finished(self, event: JudgmentEvent) -> None:
        backend = event.backend
        JUDGMENTS.labels(backend, event.status, event.winner or "none").inc()
        if event.status == "invalid":
            PARSE_FAILURES.labels(backend, event.invalid_reason or "unknown").inc()
        if event.queue_wait_s is not None and event.attempt <= 1:
            QUEUE_WAIT.observe(event.queue_wait_s)
        if event.status in ("done", "invalid"):  # a run that reached the end: all stages timed
            for name, seconds in event.timings.items():
                STAGE_SECONDS.labels(name.removesuffix("_s")).observe(seconds)
        for kind in TOKEN_KINDS:
            if event.usage.get(kind):
                BACKEND_TOKENS.labels(backend, kind).inc(event.usage[kind])


OBSERVER = PrometheusEvents()


def _exposed_registry() -> CollectorRegistry:
    """This process's registry, or the merged values of all processes in multiprocess mode."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    return registry


def render_latest() -> bytes:
    """The text exposition format of all metrics (serve with `CONTENT_TYPE_LATEST`)."""
    return generate_latest(_exposed_registry())


# -- Celery signals ------------------------------------------------------------------------------

_started: dict[str, float] = {}  # task id -> perf_counter at prerun
_server_lock = threading.Lock()
_server: tuple[Any, Any] | None = None


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: object) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_ended(task_id: str | None = None, task: Any = None, **_: object) -> None:
    started = _started.pop(task_id, None) if task_id else None
    if started is not None and task is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - started)


@task_retry.connect
def _task_retried(sender: Any = None, **_: object) -> None:
    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


@task_failure.connect
def _task_failed(sender: Any = None, **_: object) -> None:
    TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> bool:
    """Serve /metrics on addr:port from a daemon thread, once per process; False if it cannot bind."""
    global _server
    with _server_lock:
        if _server is not None:
            return True
        try:
            _server = start_http_server(port, addr=addr, registry=_exposed_registry())
        except OSError as exc:
            log.error("metrics: cannot serve on %s:%s (%s); the worker runs without metrics", addr, port, exc)
            return False
    log.info("metrics: serving Prometheus metrics on http://%s:%s/metrics", addr, port)
    return True


@worker_init.connect
def _serve_from_worker(**_: object) -> None:
    """Start the metrics endpoint in a worker's main process when PIGREWARD_METRICS_PORT is set."""
    from pydantic import ValidationError

    from core.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError:
        log.error("metrics: %s is not a port number; the worker runs without metrics", PORT_ENV)
        return
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port, settings.metrics_addr)
