"""`pigreward rescore` and `pigreward flag`: judge again what a new model, template or context made stale."""

from __future__ import annotations

from datetime import datetime

import click

from core.settings import get_settings
from models.db import session_scope
from models.rescoring import flag_judgment
from pigreward.cli.common import queue_hint
from pigreward.progress import wait_for_judgments
from tasks.embedded import worker_if_embedded
from tasks.rescoring import nightly_key, send_to_bulk
from tasks.runtime import get_db, get_resources
from workers.rescoring import run_rescore


@click.command()
@click.option("--since", default=None, help="Only judgments finished since this ISO date/time.")
@click.option("--run-key", default=None, help="Run identity (default: tonight's, nightly-YYYY-MM-DD).")
@click.option("--dry-run", is_flag=True, help="Only count what is stale, by reason.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the re-scored judgments.")
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
def rescore(since: str | None, run_key: str | None, dry_run: bool, wait: bool, no_progress: bool) -> None:
    """Re-score judgments whose model, template or user context changed, or that were flagged."""
    settings = get_settings()
    res = get_resources()
    with worker_if_embedded(needed=not dry_run):
        report = run_rescore(
            res,
            run_key=run_key or nightly_key(),
            send=send_to_bulk,
            since=datetime.fromisoformat(since) if since else None,
            dry_run=dry_run,
        )
        if report.requeued_ids and wait and (settings.embedded_broker or not dry_run):
            wait_for_judgments(
                res.db,
                report.requeued_ids,
                desc="re-scoring",
                progress=not no_progress,
                stalled=queue_hint(["bulk"]),
            )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.by_reason.items())) or "none"
    if dry_run:
        click.echo(f"dry run: {sum(report.by_reason.values())} stale of {report.scanned} scanned ({reasons})")
    elif report.already_done:
        click.echo(
            f"run {report.run_key} already finished ({report.requeued} re-scored: {reasons}); nothing has "
            "gone stale since, so nothing added"
        )
    elif report.follow_up_of:
        click.echo(
            f"run {report.follow_up_of} had already finished; {report.requeued} judgments that went stale "
            f"since were re-scored under {report.run_key} ({reasons})"
        )
    else:
        click.echo(
            f"run {report.run_key}: {report.requeued} re-scored of {report.scanned} scanned ({reasons})"
        )
    for backend, why in report.skipped_backends.items():
        click.echo(f"skipped {backend}: versions unknown ({why})", err=True)


@click.command()
@click.argument("judgment_id", type=int)
def flag(judgment_id: int) -> None:
    """Flag a judgment for re-scoring (the next rescore run judges it again)."""
    with session_scope(get_db()) as session:
        row = flag_judgment(session=session, judgment_id=judgment_id)
    if row is None:
        raise click.ClickException(f"no judgment {judgment_id}")
    click.echo(f"judgment {judgment_id} flagged")
