"""`pigreward optimize`: personalized prompt optimization, its runs and their DPO pairs."""

from __future__ import annotations

import json
from typing import TextIO

import click

from core.enums import RunStatus
from models.db import session_scope
from models.optimization import candidates_of, export_pairs, get_run
from pigreward.cli.common import BACKEND_CHOICES, migrated_db, queue_hint
from pigreward.progress import bar, wait_for_run
from tasks.embedded import worker_if_embedded
from tasks.runtime import get_db
from tasks.submit import submit_optimization


@click.group()
def optimize() -> None:
    """Personalized prompt optimization."""


@optimize.command("run")
@click.option("--user", required=True)
@click.option("--prompt", required=True, help="The base prompt to improve for this user.")
@click.option("--rounds", default=3, show_default=True)
@click.option("-k", "--candidates", "k", default=4, show_default=True, help="Rewrites proposed per round.")
@click.option(
    "--backend", type=click.Choice(BACKEND_CHOICES), default=None, help="Judge backend (default: settings)."
)
@click.option("--eval-seeds", default=8, show_default=True, help="Fresh images per side for best vs base.")
@click.option("--no-progress", is_flag=True)
def optimize_run(
    user: str, prompt: str, rounds: int, k: int, backend: str | None, eval_seeds: int, no_progress: bool
) -> None:
    """Optimize PROMPT for USER through the `optimize` queue and print the best prompt."""
    db = migrated_db()
    with worker_if_embedded():
        run_id, _ = submit_optimization(
            user=user, prompt=prompt, rounds=rounds, k=k, backend=backend, eval_seeds=eval_seeds
        )
        with bar(rounds, f"optimization {run_id}", not no_progress, unit="round") as pbar:
            run = wait_for_run(
                db, run_id, on_round=lambda done: pbar.update(done - pbar.n), stalled=queue_hint(["optimize"])
            )
    if run.status == RunStatus.failed:
        raise click.ClickException(f"optimization {run_id} failed: {run.error}")
    rate = (
        f"{100 * run.best_win_rate:.0f}% of {run.eval_comparisons}"
        if run.best_win_rate is not None
        else "n/a"
    )
    click.echo(f"run {run_id}: {run.rounds_done} rounds; best prompt: {run.best_prompt}")
    click.echo(f"best vs base prompt, judged for {user}: wins {rate} comparisons")
    click.echo(f"DPO pairs: pigreward optimize export {run_id}")


@optimize.command("export")
@click.argument("run_id", type=int)
@click.option("-o", "--output", type=click.File("w"), default="-", help="JSONL file (default stdout).")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Only pairs whose verdict is at least this confident (e.g. 0.8 for cleaner training data).",
)
def optimize_export(run_id: int, output: TextIO, min_confidence: float | None) -> None:
    """Preferred/rejected prompt pairs of a run as DPO JSONL (prompt, chosen, rejected, user, evidence,
    confidence)."""
    with session_scope(get_db()) as session:
        rows = export_pairs(session=session, run_id=run_id)
    kept = [r for r in rows if min_confidence is None or (r["confidence"] or 0.0) >= min_confidence]
    for row in kept:
        output.write(json.dumps(row, ensure_ascii=False) + "\n")
    dropped = (
        f" ({len(rows) - len(kept)} below confidence {min_confidence:g} left out)"
        if min_confidence is not None
        else ""
    )
    click.echo(f"{len(kept)} pairs{dropped}", err=True)


@optimize.command("show")
@click.argument("run_id", type=int)
def optimize_show(run_id: int) -> None:
    """A run's status and its candidates per round (prompt, image URI, wins/games)."""
    with session_scope(get_db()) as session:
        run = get_run(session=session, run_id=run_id)
        if run is None:
            raise click.ClickException(f"no optimization run {run_id}")
        cands = candidates_of(session=session, run_id=run_id)
    click.echo(f"run {run_id} for {run.user_ref}: {run.status}, {run.rounds_done}/{run.rounds} rounds")
    click.echo(f"base: {run.base_prompt}\nbest: {run.best_prompt}")
    for c in cands:
        click.echo(f"r{c.round}\t{c.wins:g}/{c.games}\tseed {c.seed}\t{c.image_uri}\t{c.prompt}")
