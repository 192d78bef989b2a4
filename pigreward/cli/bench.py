"""`pigreward bench`: benchmarks that print figures (accuracy per user, optimization, throughput)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from bench.accuracy import BenchmarkError, render_summary, run_accuracy, run_synthetic
from bench.accuracy.convert import ConversionError, convert_ranked
from bench.optimization import render, run_bench
from core.settings import get_settings


@click.group()
def bench() -> None:
    """Benchmarks that print figures."""


@bench.command("accuracy")
@click.argument("input_path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--synthetic", "synthetic_users", type=int, default=None, help="Use a synthetic set of N users instead."
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-report"),
    show_default=True,
    help="Where report.md, report.html and results.json go.",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    default=("lite",),
    show_default=True,
    help="NAME[/PROTOCOL][:swap|:noswap]; repeat for several.",
)
@click.option("--no-baselines", is_flag=True, help="Skip random, non-personalized and similarity baselines.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-progress", is_flag=True)
def bench_accuracy(
    input_path: Path | None,
    synthetic_users: int | None,
    out_dir: Path,
    backends: tuple[str, ...],
    no_baselines: bool,
    seed: int,
    no_progress: bool,
) -> None:
    """How often each backend agrees with each person: the paper's metrics and more, with baselines.

    INPUT_PATH is the harness JSONL (one line per user); or --synthetic N. Runs through the queue and
    is resumable: judgments already stored for the same versions are reused.
    """
    settings = get_settings()
    try:
        if input_path is None:
            report = run_synthetic(
                settings,
                out_dir,
                users=synthetic_users or 20,
                seed=seed,
                backends=backends,
                baselines=not no_baselines,
                progress=not no_progress,
            )
        else:
            report = run_accuracy(
                settings,
                input_path,
                out_dir,
                backends=backends,
                baselines=not no_baselines,
                progress=not no_progress,
                seed=seed,
            )
    except BenchmarkError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(render_summary(report))


@bench.command("convert")
@click.argument("src", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the A/B order of test pairs.")
@click.option("--middle-pairs", is_flag=True, help="Also make rank 2 vs 3 reference pairs.")
def bench_convert(src: Path, out_path: Path, seed: int, middle_pairs: bool) -> None:
    """Convert a ranked-images folder (rankings.jsonl + images) into the harness JSONL."""
    try:
        users = convert_ranked(src, out_path, seed=seed, middle_pairs=middle_pairs)
    except ConversionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{users} users -> {out_path}")


@bench.command("optimize")
@click.option("--users", default=6, show_default=True, help="Simulated users (opposite-taste pairs).")
@click.option("--rounds", default=3, show_default=True)
@click.option("-k", "--candidates", "k", default=4, show_default=True)
@click.option("--held-out", default=50, show_default=True, help="Held-out comparisons per user.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-progress", is_flag=True)
def bench_optimize(users: int, rounds: int, k: int, held_out: int, seed: int, no_progress: bool) -> None:
    """Optimize prompts for simulated users; the hidden taste judges final vs base prompt images."""
    outcomes = run_bench(
        get_settings(),
        users=users,
        rounds=rounds,
        k=k,
        held_out=held_out,
        seed=seed,
        progress=not no_progress,
    )
    click.echo(render(outcomes))


_PASSTHROUGH: dict[str, Any] = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


def _run_throughput(module: str, args: tuple[str, ...]) -> None:
    """Run a throughput benchmark module's own CLI (its --help lists the options)."""
    sys.argv[0] = f"pigreward bench {module.replace('_', '-')}"  # argparse's usage line
    bench_main = importlib.import_module(f"bench.{module}").main
    raise SystemExit(bench_main(list(args)))


@bench.command("orchestration", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_orchestration(args: tuple[str, ...]) -> None:
    """Judgments/s of the queue itself (null backend, real Redis/Postgres/S3); see --help."""
    _run_throughput("orchestration", args)


@bench.command("feeding", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_feeding(args: tuple[str, ...]) -> None:
    """In-flight requests and judgments/s of one worker against a slow LVLM server; see --help."""
    _run_throughput("feeding", args)


@bench.command("request-shape", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_request_shape(args: tuple[str, ...]) -> None:
    """Shared prompt prefix per user and image tokens per judgment; see --help."""
    _run_throughput("request_shape", args)


@bench.command("faults", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_faults(args: tuple[str, ...]) -> None:
    """Judgments through real faults (kills, outages, broker loss, a misbehaving LVLM); see --help."""
    _run_throughput("faults", args)


@bench.command("hostile-images", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_hostile_images(args: tuple[str, ...]) -> None:
    """Distinct 7000x7000 PNGs through one -c 64 worker: peak RSS against the decode budget; see --help."""
    _run_throughput("hostile_images", args)
