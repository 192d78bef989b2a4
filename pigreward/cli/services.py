"""Commands that start a long-running component: a worker, the API, Flower, a local model server."""

from __future__ import annotations

import os
import sys

import click
import uvicorn

from core.errors import ConfigurationError, PigrewardError
from core.extras import require
from core.settings import get_settings
from models.db import upgrade
from ops.flower import run_flower
from ops.openai_server import ServerOptions
from ops.openai_server import serve as run_model_server
from pigreward.cli.common import BACKEND_CHOICES
from tasks import app
from tasks.config import backend_config
from tasks.embedded import embedded_worker
from workers.backends import create_backend
from workers.backends.lvlm import LVLMBackend
from workers.backends.openai_http import OpenAIHTTPEngine
from workers.probe import probe

ALL_QUEUES = "context,judge,optimize,bulk"


def worker_name(queues: str, pid: int) -> str:
    """A node name unique on its host: Celery's default (celery@host) is the same for every worker there,
    and Flower then shows one of them."""
    which = "" if queues == ALL_QUEUES else "-" + "-".join(q.strip() for q in queues.split(",") if q.strip())
    return f"pigreward{which}-{pid}@%h"


@click.command()
@click.option("-Q", "--queues", default=ALL_QUEUES, show_default=True, help="Comma-separated queues.")
@click.option("-c", "--concurrency", type=int, default=None, help="Pool size (default: settings).")
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="threads suits I/O-bound backends (sglang); prefork suits CPU-bound lite.",
)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option(
    "-n",
    "--hostname",
    default=None,
    help="Celery node name (%h: the host). Default: unique per process, e.g. pigreward-bulk-4242@%h, "
    "so Flower lists several workers on one host apart.",
)
def worker(queues: str, concurrency: int | None, pool: str, loglevel: str, hostname: str | None) -> None:
    """Start a Celery worker on the configured broker (every queue unless -Q says otherwise)."""
    settings = get_settings()
    if settings.embedded_broker:
        raise click.UsageError(
            "the broker is memory:// (embedded): a separate worker cannot reach it. "
            "Set PIGREWARD_BROKER_URL=redis://host:6379/0 to run workers."
        )
    app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--pool={pool}",
            f"--loglevel={loglevel}",
            f"--hostname={hostname or worker_name(queues, os.getpid())}",
            # gossip (worker-to-worker events) is unused, and its restart after a broker loss logs
            # a spurious traceback (Celery 5.7); Flower works from task events and remote control
            "--without-gossip",
        ]
    )


@click.command()
@click.option("--judge", required=True, help="Judge checkpoint: a local directory or an HF-cache id.")
@click.option("--reasoner", default=None, help="Reasoner checkpoint (default: the judge serves both).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=30000, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-batch", default=16, show_default=True, help="Requests batched into one generate.")
@click.option(
    "--context-length",
    type=click.IntRange(min=64),
    default=None,
    help="Refuse prompt + max_tokens above this (SGLang's flag); default: the model's own.",
)
@click.option("--enable-cache-report", is_flag=True, help="Report usage.prompt_tokens_details.cached_tokens.")
@click.option(
    "--chat-template",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A jinja chat template used instead of the checkpoint's own.",
)
@click.option(
    "--no-logprobs",
    is_flag=True,
    help="Answer `logprobs: null` even when asked (a server without them: confidence from the score margin).",
)
def serve(
    judge: str,
    reasoner: str | None,
    host: str,
    port: int,
    device: str,
    max_batch: int,
    context_length: int | None,
    enable_cache_report: bool,
    chat_template: str | None,
    no_logprobs: bool,
) -> None:
    """Serve checkpoints over an OpenAI-compatible API (a local stand-in for SGLang)."""
    try:
        require("pigreward serve", "torch", "transformers")
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"serving {judge}{' and ' + reasoner if reasoner else ''} on http://{host}:{port}", err=True)
    options = ServerOptions(
        context_length=context_length,
        enable_cache_report=enable_cache_report,
        chat_template_file=chat_template,
        logprobs=not no_logprobs,
    )
    run_model_server(
        judge, reasoner, host=host, port=port, device=device, max_batch=max_batch, options=options
    )


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", default=1, show_default=True, help="uvicorn worker processes.")
def api_server(host: str, port: int, workers: int) -> None:
    """Run the REST submit API (OpenAPI docs at /docs).

    On the embedded default (memory:// broker) no other process can reach the queue, so the API runs
    an in-process worker for every queue, as the demo does; with a real broker the deployment's
    `pigreward worker` processes do the work.
    """
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    if not settings.embedded_broker:
        uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level="info")
        return
    if workers != 1:  # each uvicorn process would hold its own memory:// queue and worker
        raise click.UsageError(
            "--workers > 1 needs a broker the processes share: set PIGREWARD_BROKER_URL=redis://HOST:6379/0 "
            "and start `pigreward worker` (the embedded memory:// default lives inside one process)"
        )
    click.echo(
        "embedded default: judgments run in this process (memory:// broker, one in-process worker for "
        "every queue); set PIGREWARD_BROKER_URL and start `pigreward worker` to scale out",
        err=True,
    )
    with embedded_worker(app):
        uvicorn.run("api.main:app", host=host, port=port, workers=1, log_level="info")


@click.command(context_settings={"ignore_unknown_options": True})
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


@click.command("check")
@click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default=None,
    help="Backend to check (default: settings).",
)
@click.option("--no-probe", is_flag=True, help="LVLM backends: skip the real judgment (identity only).")
def check(backend: str | None, no_probe: bool) -> None:
    """Is the configured backend ready? For LVLM backends, sends one real judgment in both orders and
    reports the template, images, parsing, decoding, cached tokens and context length; exits 1 if not."""
    settings = get_settings()
    name = backend or settings.backend
    config = backend_config(settings)
    template = "unknown"
    if name == "sglang":
        engine = OpenAIHTTPEngine(config.http)
        for role in ("judge", "reasoner"):
            url = engine.target(role)[0]
            click.echo(f"{role}: {url} {'ready' if engine.ready(role) else 'NOT READY'}")
        template = engine.chat_template("judge")
        engine.close()
    try:
        instance = create_backend(name, config)
        click.echo(f"backend {name}: judge {instance.model_id} rev {instance.model_revision}")
        ctx = instance.context_identity
        click.echo(f"contexts by {ctx.model_id} rev {ctx.revision}; template {instance.template_version}")
    except PigrewardError as exc:
        click.echo(f"backend {name} not usable: {exc.message}", err=True)
        sys.exit(1)
    ok = True
    if isinstance(instance, LVLMBackend) and not no_probe:
        report = probe(
            instance,
            pixel_budget=settings.pixel_budget,
            max_prompt_chars=settings.api_max_prompt_chars,
            template=template,
            say=lambda line: click.echo(line, err=True),
        )
        marks = {True: "ok  ", False: "FAIL", None: "    "}
        for finding in report.findings:
            click.echo(f"{marks[finding.ok]} {finding.item}: {finding.detail}")
        ok = report.ok
        click.echo(
            "probe: " + ("the backend judges as configured" if ok else "FAILED, see the lines marked FAIL")
        )
    instance.close()
    if not ok:
        sys.exit(1)


@click.command()
def reconcile() -> None:
    """Sweep once now: send due retries, dead workers' judgments and lost messages again.

    Workers already sweep every PIGREWARD_RECONCILE_INTERVAL_S on their own; this is for operators
    (e.g. after restoring a broker while no worker runs).
    """
    from tasks.recovery import sweep_once

    try:
        report = sweep_once("cli")
    except PigrewardError as exc:
        raise click.ClickException(f"cannot sweep: {exc}") from exc
    if report.skipped:
        click.echo(f"nothing done: {report.skipped}")
        return
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report.resent.items()))
    click.echo(f"re-sent {report.total} judgments{f' ({reasons})' if reasons else ''}")
    if report.failed_past_horizon:
        click.echo(f"failed {report.failed_past_horizon} waiting judgments past the retry horizon")


@click.command("status")
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for workers to answer.")
def status(timeout: float) -> None:
    """The queues: messages waiting, the workers consuming each, and any queue nobody consumes."""
    from tasks.app import QUEUES
    from tasks.broker import CeleryBroker, consumers_by_queue, no_consumer_hint

    settings = get_settings()
    if settings.embedded_broker:
        raise click.UsageError(
            "the broker is memory:// (embedded): there are no separate workers to report on; "
            "set PIGREWARD_BROKER_URL=redis://HOST:6379/0"
        )
    try:
        depths = {q: CeleryBroker(app).depth(q) for q in QUEUES}
        consumers = consumers_by_queue(app, timeout)
    except PigrewardError as exc:
        raise click.ClickException(exc.message) from exc
    workers = sorted({w for ws in consumers.values() for w in ws})
    click.echo(f"workers: {len(workers)}{' (' + ', '.join(workers) + ')' if workers else ''}")
    for queue in QUEUES:
        who = consumers.get(queue) or []
        click.echo(f"{queue:<9} {depths[queue]:>7} waiting  consumed by {len(who)} worker(s)")
    hint = no_consumer_hint({q: n for q, n in depths.items() if n and not consumers.get(q)})
    if hint:
        click.echo(f"warning: {hint}")
