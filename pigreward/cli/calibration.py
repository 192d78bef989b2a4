"""`pigreward calibrate`: fit verdict-confidence calibrations per judge model version, and list them."""

from __future__ import annotations

import click

from models.calibrations import list_calibrations
from models.db import session_scope
from pigreward.cli.common import BACKEND_CHOICES, migrated_db
from workers.trust import fit_from_contexts


@click.group()
def calibrate() -> None:
    """Confidence calibrations (one per backend and judge model version)."""


@calibrate.command("fit")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="lite", show_default=True)
def calibrate_fit(backend: str) -> None:
    """Fit from the leave-one-out checks stored with users' contexts (PIGREWARD_CONTEXT_QUALITY) and
    store one calibration per judge model version; workers apply it within PIGREWARD_CALIBRATION_REFRESH_S.

    Reference pairs are a user's own past choices, with their noise: a calibration fitted on them is
    cautious on clear pairs. `pigreward bench accuracy --save-calibration` fits one on labelled test pairs."""
    fitted, notes = fit_from_contexts(migrated_db(), backend)
    for note in notes:
        click.echo(f"not fitted: {note}", err=True)
    for f in fitted:
        c = f.calibration
        click.echo(
            f"{c.version}: {c.pairs} held-out pairs from {f.users} users; expected calibration error "
            f"{f.ece_raw:.3f} raw -> {f.ece_calibrated:.3f} calibrated (on the pairs it was fitted on)"
        )
    if not fitted:
        raise click.ClickException(
            f"no calibration fitted for {backend}: build contexts with PIGREWARD_CONTEXT_QUALITY=1 first"
        )


@calibrate.command("list")
def calibrate_list() -> None:
    """Stored calibrations, newest first (the newest of each model version is the one applied)."""
    with session_scope(migrated_db()) as session:
        rows = list_calibrations(session=session)
    for row in rows:
        click.echo(
            f"{row.version}\t{row.pairs} pairs\t{row.source}\t{row.created_at:%Y-%m-%d %H:%M}\t"
            f"ECE {row.metrics.get('ece_calibrated', '?')}"
        )
    click.echo(f"{len(rows)} calibrations", err=True)
