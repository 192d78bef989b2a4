"""Nightly bulk re-scoring (queue `bulk`): the beat entry and `pigreward rescore` share this task."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Task

from tasks.app import app
from tasks.runtime import get_resources
from tasks.submit import send_judgments
from workers.rescoring import run_rescore

CHUNK = 100
"""Judgments per `judge_chunk` message of a re-scoring run."""


def nightly_key(now: datetime | None = None) -> str:
    return f"nightly-{(now or datetime.now(UTC)):%Y-%m-%d}"


def send_to_bulk(judgment_ids: Sequence[int]) -> None:
    """Re-queued rows (already committed) go out as chunks on `bulk`."""
    send_judgments(judgment_ids, chunk_size=CHUNK, queue="bulk")


@app.task(bind=True, name="pigreward.rescore_stale", max_retries=0)
def rescore_stale(
    self: Task[Any, Any], run_key: str | None = None, since: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Re-queue stale judgments (new model, template or context; flagged) in chunks on `bulk`."""
    report = run_rescore(
        get_resources(),
        run_key=run_key or nightly_key(),
        send=send_to_bulk,
        since=datetime.fromisoformat(since) if since else None,
        dry_run=dry_run,
        chunk_size=CHUNK,
    )
    return {
        "run_key": report.run_key,
        "requeued": report.requeued,
        "by_reason": report.by_reason,
        "scanned": report.scanned,
        "already_done": report.already_done,
        "follow_up_of": report.follow_up_of,
        "skipped_backends": report.skipped_backends,
        "dry_run": report.dry_run,
    }
