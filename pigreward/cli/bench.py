"""`pigreward bench`: benchmarks that print figures (accuracy per user, optimization, throughput)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from bench.accuracy import BenchmarkError, render_summary, run_accuracy, run_synthetic
from bench.accuracy import synthetic as synthetic_bench
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
@click.option(
    "--reference-noise",
    type=click.FloatRange(0.0, 0.5),
    default=synthetic_bench.REFERENCE_NOISE,
    show_default=True,
    help="--synthetic: each user's references are clear pairs (utility gap >= 0.3), the worse image "
    "chosen in the user's own share of them (flip rate), the rates spread evenly over [0, this] across users, so contexts differ in "
    "how far they can be trusted (what context quality and calibrated confidence must detect).",
)
@click.option(
    "--references",
    "references",
    default=f"{synthetic_bench.MIN_REFS}-{synthetic_bench.MAX_REFS}",
    show_default=True,
    metavar="MIN-MAX",
    help="--synthetic: reference pairs per user (MIN-MAX or one number). A context's leave-one-out "
    "accuracy on fewer than about 30 references is mostly noise.",
)
@click.option(
    "--tests-per-user",
    type=click.IntRange(1),
    default=synthetic_bench.TESTS_PER_USER,
    show_default=True,
    help="--synthetic: test pairs per user. A user's accuracy needs about 100 to be measured to +-0.04, "
    "which correlating users' context quality with their accuracy relies on.",
)
@click.option(
    "--save-calibration",
    is_flag=True,
    help="After the run, fit a confidence calibration on all test verdicts of each judged backend and "
    "store it (source bench:<dataset>); workers apply the newest one of their judge's model version.",
)
@click.option("--no-progress", is_flag=True)
@click.pass_context
def bench_accuracy(
    ctx: click.Context,
    input_path: Path | None,
    synthetic_users: int | None,
    out_dir: Path,
    backends: tuple[str, ...],
    no_baselines: bool,
    seed: int,
    reference_noise: float,
    references: str,
    tests_per_user: int,
    save_calibration: bool,
    no_progress: bool,
) -> None:
    """How often each backend agrees with each person: the paper's metrics and more, with baselines,
    and how far each backend's confidence can be trusted (calibration, accuracy at high confidence,
    context quality against users' accuracy).

    INPUT_PATH is the harness JSONL (one line per user); without it, the synthetic set of --synthetic N
    users (20 by default). Runs through the queue and is resumable: judgments already stored for the
    same versions are reused.
    """
    settings = get_settings()
    if input_path is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("reference_noise", "references", "tests_per_user")
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply to --synthetic, not to INPUT_PATH")
    min_refs, max_refs = _refs_range(references)
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
                reference_noise=reference_noise,
                min_refs=min_refs,
                max_refs=max_refs,
                tests_per_user=tests_per_user,
                save_calibration=save_calibration,
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
                save_calibration=save_calibration,
            )
    except BenchmarkError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(render_summary(report))


def _refs_range(text: str) -> tuple[int, int]:
    """``20-30`` or ``25``: the least and most reference pairs per user."""
    low, sep, high = text.strip().partition("-")
    try:
        lo, hi = int(low), int(high if sep else low)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected MIN-MAX, e.g. 20-30", param_hint="--references"
        ) from None
    if not 0 <= lo <= hi:
        raise click.BadParameter(f"{text!r}: need 0 <= MIN <= MAX", param_hint="--references")
    return lo, hi


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
