"""The Celery app: queues, routes and reliability settings, configured from settings.

Queues: `context` (bootstrap a user's context), `judge` (interactive judgments), `optimize`
(prompt optimization), `bulk` (chunked and nightly work, so it never starves `judge`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Queue
from kombu import pools as kombu_pools

from core.settings import Settings, get_settings
from tasks import kombu_fixes, logs

QUEUES = ("context", "judge", "optimize", "bulk")
ROUTES = {
    "pigreward.bootstrap_context": {"queue": "context"},
    "pigreward.judge": {"queue": "judge"},
    "pigreward.judge_chunk": {"queue": "bulk"},
    "pigreward.reconcile": {"queue": "bulk"},
    "pigreward.rescore_stale": {"queue": "bulk"},
    "pigreward.optimize_prompt": {"queue": "optimize"},
}


def celery_config(settings: Settings) -> dict[str, object]:
    limit = settings.task_time_limit_s
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "judge",
        "task_routes": ROUTES,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A task is acknowledged after it ran, and re-queued if its worker dies: tasks are idempotent
        # (the ledger skips finished rows), so a redelivery never duplicates work.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limit,
        "task_soft_time_limit": max(1, limit - 30),
        # Redis re-delivers an unacked message after this; it must outlast the longest task.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "result_expires": 7 * 24 * 3600,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "broker_connection_retry_on_startup": True,
        # a result backend that is briefly down (Redis restarting) is waited for, not a failed task
        "result_backend_always_retry": True,
        "result_backend_max_retries": 60,
        "result_backend_max_sleep_between_retries_ms": 10_000,
        # read by our task classes when a transient error is retried (not fixed at import time)
        "pigreward_max_retries": settings.max_retries,
        "beat_schedule": {
            "nightly-rescore": {
                "task": "pigreward.rescore_stale",
                "schedule": crontab(hour=settings.rescore_hour, minute=settings.rescore_minute),
            },
        },
    }


def create_app(settings: Settings | None = None) -> Celery:
    app = Celery(
        "pigreward", include=["tasks.judgments", "tasks.contexts", "tasks.rescoring", "tasks.optimization"]
    )
    app.conf.update(celery_config(settings or get_settings()))
    return app


def reconfigure(app: Celery, settings: Settings) -> None:
    """Point a running app at (possibly) other services: new settings, and the broker connection
    pool, producer pool and result backend it cached for the old ones dropped (they would keep
    publishing to the old broker)."""
    app.conf.update(celery_config(settings))
    cached: Any = app  # Celery's caches are private attributes, untyped
    kombu_pools.reset()  # kombu keeps producer pools per connection URL, process-wide
    cached._pool = None
    cached.amqp._producer_pool = None
    cached._backend_cache = None
    cached._local.__dict__.pop("backend", None)


app = create_app()
logs.install()
kombu_fixes.install()
