"""`pigreward demo` and `pigreward synth`: the main job on synthetic users, and the data it draws."""

from __future__ import annotations

from pathlib import Path

import click

from core.settings import get_settings
from pigreward import synthetic
from pigreward.cli.common import BACKEND_CHOICES, PROTOCOL_CHOICES
from pigreward.demo import run_demo
from pigreward.progress import bar


@click.command()
@click.option("--users", default=20, show_default=True, help="Simulated users (in opposite-taste pairs).")
@click.option("--images", default=200, show_default=True, help="Synthetic images in the pool.")
@click.option("--tests-per-user", default=10, show_default=True, help="Held-out test pairs per user.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic set.")
@click.option(
    "--backend", type=click.Choice(BACKEND_CHOICES), default=None, help="Judge backend (default: settings)."
)
@click.option("--protocol", type=click.Choice(PROTOCOL_CHOICES), default=None, help="LVLM protocol.")
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
def demo(
    users: int,
    images: int,
    tests_per_user: int,
    seed: int,
    backend: str | None,
    protocol: str | None,
    no_progress: bool,
) -> None:
    """Generate a synthetic set, judge every test pair through the queue, print accuracies."""
    settings = get_settings()
    report = run_demo(
        settings,
        users=users,
        images=images,
        tests_per_user=tests_per_user,
        seed=seed,
        backend=backend or settings.backend,
        protocol=protocol,
        progress=not no_progress,
    )
    click.echo(report.render())
    click.echo(f"results kept in {settings.resolved_database_url}")


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--users", default=20, show_default=True, help="Simulated users (in opposite-taste pairs).")
@click.option("--images", default=200, show_default=True, help="Synthetic images in the pool.")
@click.option("--min-refs", default=5, show_default=True, help="Fewest reference pairs per user.")
@click.option("--max-refs", default=15, show_default=True, help="Most reference pairs per user.")
@click.option("--tests-per-user", default=10, show_default=True, help="Held-out test pairs per user.")
@click.option("--size", default=256, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def synth(
    out_dir: Path,
    users: int,
    images: int,
    min_refs: int,
    max_refs: int,
    tests_per_user: int,
    size: int,
    seed: int,
    no_progress: bool,
) -> None:
    """Generate a synthetic set: drawn images and simulated users with hidden tastes (manifest.json)."""
    try:
        with bar(images, "drawing images", not no_progress, unit="image") as pbar:
            data = synthetic.generate(
                out_dir,
                users=users,
                images=images,
                min_refs=min_refs,
                max_refs=max_refs,
                tests_per_user=tests_per_user,
                seed=seed,
                image_size=size,
                progress=pbar.update,
            )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    refs = sum(len(u.references) for u in data.users)
    tests = sum(len(u.tests) for u in data.users)
    click.echo(
        f"{len(data.images)} images, {len(data.users)} users, {refs} reference pairs, {tests} test pairs "
        f"-> {out_dir / synthetic.MANIFEST}"
    )
