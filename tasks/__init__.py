"""Celery tasks: `tasks.judge.delay(...)`, `tasks.bootstrap_context.delay(...)` and the bulk form."""

from tasks.app import app
from tasks.contexts import bootstrap_context
from tasks.judging import judge, judge_chunk, reconcile, submit_batch, submit_judgments
from tasks.rescoring import rescore_stale

__all__ = [
    "app",
    "bootstrap_context",
    "judge",
    "judge_chunk",
    "reconcile",
    "rescore_stale",
    "submit_batch",
    "submit_judgments",
]
