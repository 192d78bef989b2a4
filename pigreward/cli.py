"""`pigreward`: the command line. Each command is a few lines over tasks/, workers/ and models/."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

import click

from pigreward.settings import get_settings
from workers.backends import available_backends

BACKENDS = available_backends()


@click.group()
@click.version_option(package_name="pigreward")
def main() -> None:
    """Personalized pairwise judging of text-to-image outputs (PIGReward) as a batch job queue."""


@main.command()
@click.option("--users", default=20, show_default=True, help="Simulated users (in opposite-taste pairs).")
@click.option("--images", default=200, show_default=True, help="Synthetic images in the pool.")
@click.option("--tests-per-user", default=10, show_default=True, help="Held-out test pairs per user.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic set.")
@click.option(
    "--backend", type=click.Choice(BACKENDS), default=None, help="Judge backend (default: settings)."
)
@click.option(
    "--protocol", type=click.Choice(["pigreward-v1", "json-v1"]), default=None, help="LVLM protocol."
)
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
    from pigreward.demo import run_demo

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


@main.command()
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
    from pigreward import synthetic
    from pigreward.progress import bar

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


@main.command()
@click.option(
    "-Q", "--queues", default="context,judge,optimize,bulk", show_default=True, help="Comma-separated queues."
)
@click.option("-c", "--concurrency", type=int, default=None, help="Pool size (default: settings).")
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="threads suits I/O-bound backends (sglang); prefork suits CPU-bound lite.",
)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
def worker(queues: str, concurrency: int | None, pool: str, loglevel: str) -> None:
    """Start a Celery worker on the configured broker."""
    settings = get_settings()
    if settings.embedded_broker:
        raise click.UsageError(
            "the broker is memory:// (embedded): a separate worker cannot reach it. "
            "Set PIGREWARD_BROKER_URL=redis://host:6379/0 to run workers."
        )
    from tasks import app

    app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--pool={pool}",
            f"--loglevel={loglevel}",
        ]
    )


@main.command()
@click.option("--judge", required=True, help="Judge checkpoint: a local directory or an HF-cache id.")
@click.option("--reasoner", default=None, help="Reasoner checkpoint (default: the judge serves both).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=30000, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-batch", default=16, show_default=True, help="Requests batched into one generate.")
def serve(judge: str, reasoner: str | None, host: str, port: int, device: str, max_batch: int) -> None:
    """Serve checkpoints over an OpenAI-compatible API (a local stand-in for SGLang)."""
    from ops.openai_server import serve as run_server

    click.echo(f"serving {judge}{' and ' + reasoner if reasoner else ''} on http://{host}:{port}", err=True)
    run_server(judge, reasoner, host=host, port=port, device=device, max_batch=max_batch)


@main.command()
@click.option(
    "--protocol",
    type=click.Choice(["pigreward-v1", "json-v1"]),
    default="pigreward-v1",
    show_default=True,
    help="Which output format to read.",
)
@click.option(
    "--finish-reason", default="stop", show_default=True, help="As the server reported it (length = cut off)."
)
@click.argument("file", type=click.File("r", encoding="utf-8"))
def parse(protocol: str, finish_reason: str, file) -> None:  # type: ignore[no-untyped-def]
    """Parse one raw model output (FILE, or - for stdin) and print the result as JSON.

    Exits 1 when the output is invalid, so scripts can check templates in bulk.
    """
    from workers.generation import Generation
    from workers.protocols import get_protocol

    text = file.read()
    result = get_protocol(protocol).parse(Generation(text=text, finish_reason=finish_reason))
    winners = {"A": "1", "B": "2", "tie": "tie", None: None}
    out = {
        "outcome": result.outcome,
        "reason": result.invalid_reason,
        "detail": result.invalid_detail,
        "dimensions": [
            {"name": d.name, "score_1": _num(d.score_a), "score_2": _num(d.score_b), "reason": d.reason}
            for d in result.dimensions
        ],
        "totals": {"1": _num(result.total_a), "2": _num(result.total_b)}
        if result.outcome == "valid"
        else None,
        "winner": winners[result.winner],
    }
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    if result.outcome != "valid":
        sys.exit(1)


@main.command("check")
@click.option(
    "--backend", type=click.Choice(BACKENDS), default=None, help="Backend to check (default: settings)."
)
def check(backend: str | None) -> None:
    """Is the configured backend ready? Prints model identity and template version, exits 1 if not."""
    from tasks.runtime import backend_config
    from workers.backends import create_backend
    from workers.errors import PigrewardError

    settings = get_settings()
    name = backend or settings.backend
    config = backend_config(settings)
    if name == "sglang":
        from workers.backends.openai_http import OpenAIHTTPEngine

        engine = OpenAIHTTPEngine(config.http)
        for role in ("judge", "reasoner"):
            url = engine.target(role)[0]
            click.echo(f"{role}: {url} {'ready' if engine.ready(role) else 'NOT READY'}")
        engine.close()
    try:
        instance = create_backend(name, config)
        click.echo(f"backend {name}: judge {instance.model_id} rev {instance.model_revision}")
        ctx = instance.context_identity
        click.echo(f"contexts by {ctx.model_id} rev {ctx.revision}; template {instance.template_version}")
        instance.close()
    except PigrewardError as exc:
        click.echo(f"backend {name} not usable: {exc.message}", err=True)
        sys.exit(1)


@main.group()
def keys() -> None:
    """API keys (only a hash is stored; a key is shown once)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to (created if new).")
@click.option("--name", default="default", show_default=True, help="A label for the key.")
def keys_create(tenant: str, name: str) -> None:
    """Create a key and print it once."""
    from models.db import session_scope, upgrade
    from models.keys import create_key
    from tasks.runtime import get_resources

    upgrade(get_settings().resolved_database_url)
    with session_scope(get_resources().engine) as session:
        row, key = create_key(session=session, tenant=tenant, name=name)
        key_id = row.id
    click.echo(key)
    click.echo(f"key {key_id} for tenant {tenant!r} ({name}); store it now, it is not shown again", err=True)


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def keys_list(tenant: str | None) -> None:
    """List keys (id, tenant, name, prefix, state)."""
    from models.db import session_scope
    from models.keys import list_keys
    from tasks.runtime import get_resources

    with session_scope(get_resources().engine) as session:
        rows = list_keys(session=session, tenant=tenant)
        for key, tenant_name in rows:
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            click.echo(f"{key.id}\t{tenant_name}\t{key.name}\tpgr_{key.prefix}_...\t{state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key by id: requests with it answer 401 from now on."""
    from models.db import session_scope
    from models.keys import revoke_key
    from tasks.runtime import get_resources

    with session_scope(get_resources().engine) as session:
        row = revoke_key(session=session, key_id=key_id)
    if row is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"key {key_id} revoked")


@main.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", default=1, show_default=True, help="uvicorn worker processes.")
def api_server(host: str, port: int, workers: int) -> None:
    """Run the REST submit API (OpenAPI docs at /docs)."""
    import uvicorn

    from models.db import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    if settings.embedded_broker:
        click.echo("warning: memory:// broker: jobs submitted here need a worker in this process", err=True)
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level="info")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option(
    "--user",
    envvar="PIGREWARD_FLOWER_USER",
    default=None,
    help="Basic-auth user (env PIGREWARD_FLOWER_USER).",
)
@click.option("--no-auth", is_flag=True, help="No basic auth (loopback address only).")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, user: str | None, no_auth: bool, extra: tuple[str, ...]) -> None:
    """Start Flower on the configured broker, behind basic auth (password from PIGREWARD_FLOWER_PASSWORD)."""
    import os

    from ops.flower import run_flower

    password = os.environ.get("PIGREWARD_FLOWER_PASSWORD")
    auth = f"{user}:{password}" if user and password else None
    try:
        run_flower(
            get_settings().broker_url,
            port=port,
            address=address,
            basic_auth=auth,
            extra=list(extra),
            no_auth=no_auth,
            exec_=True,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
@click.option("--since", default=None, help="Only judgments finished since this ISO date/time.")
@click.option("--run-key", default=None, help="Run identity (default: tonight's, nightly-YYYY-MM-DD).")
@click.option("--dry-run", is_flag=True, help="Only count what is stale, by reason.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the re-scored judgments.")
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
def rescore(since: str | None, run_key: str | None, dry_run: bool, wait: bool, no_progress: bool) -> None:
    """Re-score judgments whose model, template or user context changed, or that were flagged."""
    import contextlib
    from datetime import datetime

    from pigreward.progress import wait_for_judgments
    from tasks import app
    from tasks.embedded import embedded_worker
    from tasks.rescoring import nightly_key, send_to_bulk
    from tasks.runtime import get_resources
    from workers.rescore import run_rescore

    settings = get_settings()
    res = get_resources()
    worker = embedded_worker(app) if settings.embedded_broker and not dry_run else contextlib.nullcontext()
    with worker:
        report = run_rescore(
            res,
            run_key=run_key or nightly_key(),
            send=send_to_bulk,
            since=datetime.fromisoformat(since) if since else None,
            dry_run=dry_run,
        )
        if report.requeued_ids and wait and (settings.embedded_broker or not dry_run):
            wait_for_judgments(res.engine, report.requeued_ids, desc="re-scoring", progress=not no_progress)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.by_reason.items())) or "none"
    if dry_run:
        click.echo(f"dry run: {sum(report.by_reason.values())} stale of {report.scanned} scanned ({reasons})")
    elif report.already_done:
        click.echo(
            f"run {report.run_key} already finished ({report.requeued} re-scored: {reasons}); nothing added"
        )
    else:
        click.echo(
            f"run {report.run_key}: {report.requeued} re-scored of {report.scanned} scanned ({reasons})"
        )
    for backend, why in report.skipped_backends.items():
        click.echo(f"skipped {backend}: versions unknown ({why})", err=True)


@main.command()
@click.argument("judgment_id", type=int)
def flag(judgment_id: int) -> None:
    """Flag a judgment for re-scoring (the next rescore run judges it again)."""
    from models.db import session_scope
    from models.rescore import flag_judgment
    from tasks.runtime import get_resources

    with session_scope(get_resources().engine) as session:
        row = flag_judgment(session=session, judgment_id=judgment_id)
    if row is None:
        raise click.ClickException(f"no judgment {judgment_id}")
    click.echo(f"judgment {judgment_id} flagged")


@main.group()
def optimize() -> None:
    """Personalized prompt optimization."""


@optimize.command("run")
@click.option("--user", required=True)
@click.option("--prompt", required=True, help="The base prompt to improve for this user.")
@click.option("--rounds", default=3, show_default=True)
@click.option("-k", "--candidates", "k", default=4, show_default=True, help="Rewrites proposed per round.")
@click.option(
    "--backend", type=click.Choice(BACKENDS), default=None, help="Judge backend (default: settings)."
)
@click.option("--eval-seeds", default=8, show_default=True, help="Fresh images per side for best vs base.")
@click.option("--no-progress", is_flag=True)
def optimize_run(
    user: str, prompt: str, rounds: int, k: int, backend: str | None, eval_seeds: int, no_progress: bool
) -> None:
    """Optimize PROMPT for USER through the `optimize` queue and print the best prompt."""
    import contextlib
    import time

    from models.db import session_scope, upgrade
    from models.tables import OptimizationRun
    from pigreward.progress import bar
    from tasks import app
    from tasks.embedded import embedded_worker
    from tasks.optimizing import start_optimization
    from tasks.runtime import get_resources

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    worker = embedded_worker(app) if settings.embedded_broker else contextlib.nullcontext()
    with worker:
        run_id = start_optimization(
            user=user, prompt=prompt, rounds=rounds, k=k, backend=backend, eval_seeds=eval_seeds
        )
        with bar(rounds, f"optimization {run_id}", not no_progress, unit="round") as pbar:
            while True:
                with session_scope(get_resources().engine) as session:
                    run = session.get(OptimizationRun, run_id)
                assert run is not None
                pbar.update(run.rounds_done - pbar.n)
                if run.status in ("done", "failed"):
                    break
                time.sleep(0.3)
    if run.status == "failed":
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
def optimize_export(run_id: int, output) -> None:  # type: ignore[no-untyped-def]
    """Preferred/rejected prompt pairs of a run as DPO JSONL (prompt, chosen, rejected, user, evidence)."""
    from models.db import session_scope
    from models.optimization import export_pairs
    from tasks.runtime import get_resources

    with session_scope(get_resources().engine) as session:
        rows = export_pairs(session=session, run_id=run_id)
    for row in rows:
        output.write(json.dumps(row, ensure_ascii=False) + "\n")
    click.echo(f"{len(rows)} pairs", err=True)


@optimize.command("show")
@click.argument("run_id", type=int)
def optimize_show(run_id: int) -> None:
    """A run's status and its candidates per round (prompt, image URI, wins/games)."""
    from models.db import session_scope
    from models.optimization import candidates_of
    from models.tables import OptimizationRun
    from tasks.runtime import get_resources

    with session_scope(get_resources().engine) as session:
        run = session.get(OptimizationRun, run_id)
        if run is None:
            raise click.ClickException(f"no optimization run {run_id}")
        cands = candidates_of(session=session, run_id=run_id)
    click.echo(f"run {run_id} for {run.user_ref}: {run.status}, {run.rounds_done}/{run.rounds} rounds")
    click.echo(f"base: {run.base_prompt}\nbest: {run.best_prompt}")
    for c in cands:
        click.echo(f"r{c.round}\t{c.wins:g}/{c.games}\tseed {c.seed}\t{c.image_uri}\t{c.prompt}")


@main.group()
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
    from bench.accuracy import BenchmarkError, render_summary, run_accuracy, run_synthetic

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
    from bench.convert import ConversionError, convert_ranked

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
    from bench.optimize import render, run_bench

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


_PASSTHROUGH = {
    "context_settings": {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
}


def _run_throughput(module: str, args: tuple[str, ...]) -> None:
    """Run a throughput benchmark module's own CLI (its --help lists the options)."""
    import importlib

    sys.argv[0] = f"pigreward bench {module.replace('_', '-')}"  # argparse's usage line
    try:
        bench_main = importlib.import_module(f"bench.{module}").main
        raise SystemExit(bench_main(list(args)))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("tests"):
            raise click.ClickException(
                f"bench {module} starts its own Redis, Postgres database and moto S3 with the helpers in "
                "tests/support: run it from a source checkout (pip install -e '.[cpu,dev]')"
            ) from exc
        raise


@bench.command("orchestration", **_PASSTHROUGH)  # type: ignore[arg-type]
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_orchestration(args: tuple[str, ...]) -> None:
    """Judgments/s of the queue itself (null backend, real Redis/Postgres/S3); see --help."""
    _run_throughput("orchestration", args)


@bench.command("feeding", **_PASSTHROUGH)  # type: ignore[arg-type]
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_feeding(args: tuple[str, ...]) -> None:
    """In-flight requests and judgments/s of one worker against a slow LVLM server; see --help."""
    _run_throughput("feeding", args)


@bench.command("request-shape", **_PASSTHROUGH)  # type: ignore[arg-type]
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_request_shape(args: tuple[str, ...]) -> None:
    """Shared prompt prefix per user and image tokens per judgment; see --help."""
    _run_throughput("request_shape", args)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations (SQLite or Postgres, from PIGREWARD_DATABASE_URL)."""
    from models.db import upgrade

    url = get_settings().resolved_database_url
    now = upgrade(url, revision)
    click.echo(f"database at revision {now}: {_redact(url)}")


@main.group()
def refs() -> None:
    """Users' reference pairs."""


@refs.command("add")
@click.option("--user", required=True, help="The end user's external id (created if new).")
@click.option("--prompt", required=True)
@click.argument("chosen")
@click.argument("rejected")
def refs_add(user: str, prompt: str, chosen: str, rejected: str) -> None:
    """Add one reference pair: the user preferred CHOSEN over REJECTED (local files or URIs)."""
    from models.db import session_scope, upgrade
    from models.users import add_reference, ensure_tenant, ensure_user
    from tasks.runtime import get_resources

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    res = get_resources()
    chosen_uri, rejected_uri = _as_uri(chosen, res), _as_uri(rejected, res)
    with session_scope(res.engine) as session:
        tenant = ensure_tenant(session=session, name=settings.default_tenant)
        row = ensure_user(session=session, tenant_id=tenant.id, external_id=user)  # type: ignore[arg-type]
        ref = add_reference(
            session=session,
            user_id=row.id,
            prompt=prompt,
            chosen_uri=chosen_uri,
            rejected_uri=rejected_uri,  # type: ignore[arg-type]
        )
    click.echo(f"reference {ref.id} for user {user!r}: {chosen_uri} > {rejected_uri}")


@main.command()
@click.option("--user", required=True, help="The end user's external id.")
@click.option("--prompt", required=True, help="The prompt both images were generated for.")
@click.option(
    "--backend", type=click.Choice(BACKENDS), default=None, help="Judge backend (default: settings)."
)
@click.option(
    "--protocol", type=click.Choice(["pigreward-v1", "json-v1"]), default=None, help="LVLM protocol."
)
@click.option(
    "--swap/--no-swap", default=None, help="Judge both orders (default: on for LVLM backends, off for lite)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored judgment as JSON.")
@click.argument("image_a")
@click.argument("image_b")
def judge(
    user: str,
    prompt: str,
    backend: str | None,
    protocol: str | None,
    swap: bool | None,
    as_json: bool,
    image_a: str,
    image_b: str,
) -> None:
    """Judge one pair (local files or URIs) for USER and print the dimension table."""
    from models.db import session_scope, upgrade
    from models.ledger import dimensions_of, get_judgment, release_judgment
    from tasks.judging import record, spec_from_call
    from tasks.runtime import get_resources
    from workers.errors import TransientError
    from workers.pipeline import run_judgment

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    res = get_resources()
    options: dict[str, object] = {}
    if swap is not None:
        options["swap"] = swap
    if backend:
        options["backend"] = backend
    if protocol:
        options["protocol"] = protocol
    spec = spec_from_call(user, prompt, _as_uri(image_a, res), _as_uri(image_b, res), options)
    [judgment_id] = record([spec])
    token = f"cli-{uuid.uuid4()}"
    try:
        run_judgment(res=res, judgment_id=judgment_id, token=token)
    except TransientError as exc:
        with session_scope(res.engine) as session:
            release_judgment(session=session, judgment_id=judgment_id, token=token)
        raise click.ClickException(f"judgment {judgment_id} not finished, try again later: {exc}") from exc
    with session_scope(res.engine) as session:
        row = get_judgment(session=session, judgment_id=judgment_id)
        dims = dimensions_of(session=session, judgment_id=judgment_id)
    assert row is not None
    if as_json:
        out = row.model_dump(mode="json")
        out["dimensions"] = [d.model_dump(mode="json", exclude={"id", "judgment_id"}) for d in dims]
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(_render_judgment(row, dims))
    if row.status not in ("done",):
        sys.exit(1)


def _render_judgment(row, dims) -> str:  # type: ignore[no-untyped-def]
    lines = [f"judgment {row.id}  user {row.user_ref}  status {row.status}"]
    if row.status in ("rejected", "failed"):
        lines.append(f"error [{row.error_code}]: {row.error}")
        return "\n".join(lines)
    if row.status == "invalid":
        lines.append(f"invalid output ({row.invalid_reason}); raw text:")
        lines.extend(row.raw_outputs)
        return "\n".join(lines)
    width = max([len(d.name) for d in dims] + [9])
    lines.append(f"{'dimension':<{width}}  {'A':>7}  {'B':>7}  reason")
    for d in dims:
        lines.append(f"{d.name:<{width}}  {d.score_a:>7.2f}  {d.score_b:>7.2f}  {d.reason}")
    lines.append(f"{'total':<{width}}  {row.total_a:>7.2f}  {row.total_b:>7.2f}")
    lines.append(
        f"winner: {row.winner}   ({row.judge_model} rev {row.model_revision}, {row.template_version})"
    )
    if row.rationale:
        lines.append(f"rationale: {row.rationale}")
    return "\n".join(lines)


def _as_uri(value: str, res) -> str:  # type: ignore[no-untyped-def]
    """URIs pass through; an existing local file outside the image root is copied in by content hash."""
    if "://" in value:
        return value
    path = Path(value)
    if not path.is_file():
        return value  # let the store report it (not found / outside root) as a recorded error
    store = res.loader.store
    try:
        store.resolve_file(str(path.resolve()))
        return f"file://{path.resolve().relative_to(store.root)}"
    except Exception:
        data = path.read_bytes()
        name = f"uploads/{hashlib.sha256(data).hexdigest()[:32]}{path.suffix.lower()}"
        return store.write_file(name, data)


def _num(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":
    main()
