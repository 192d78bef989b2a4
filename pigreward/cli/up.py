"""`pigreward up`: a whole single-host deployment in one command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from core.settings import get_settings
from models.db import upgrade
from ops.flower import PASSWORD_ENV, USER_ENV, is_loopback
from ops.single_host import Deployment, PartFailed, Supervisor, plan


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the API and Flower listen.")
@click.option("--api-port", default=8000, show_default=True)
@click.option("--flower-port", default=5555, show_default=True)
@click.option("--no-flower", is_flag=True, help="Start no Flower.")
@click.option("--no-beat", is_flag=True, help="Start no beat (the nightly re-scoring schedule).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None, help="Threads per worker.")
@click.option(
    "--logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for each part's log (default: $PIGREWARD_DATA_DIR/logs).",
)
@click.option("--stop-timeout", default=60.0, show_default=True, help="Seconds parts get to stop.")
def up(
    host: str,
    api_port: int,
    flower_port: int,
    no_flower: bool,
    no_beat: bool,
    concurrency: int | None,
    logs: Path | None,
    stop_timeout: float,
) -> None:
    """Start the API, a worker for each kind of work (context,judge / optimize / bulk: every queue),
    beat and Flower on the configured Redis, database and S3; Ctrl-C stops them all."""
    settings = get_settings()
    if settings.embedded_broker:
        raise click.UsageError(
            "pigreward up runs separate processes: set PIGREWARD_BROKER_URL=redis://HOST:6379/0 (and "
            "PIGREWARD_DATABASE_URL, PIGREWARD_S3_*); on the embedded default use `pigreward api` alone"
        )
    flower_auth = bool(os.environ.get(USER_ENV) and os.environ.get(PASSWORD_ENV))
    if not no_flower and not flower_auth and not is_loopback(host):
        raise click.UsageError(f"Flower on {host} needs {USER_ENV} and {PASSWORD_ENV} (or --no-flower)")
    upgrade(settings.resolved_database_url)
    folder = logs or settings.data_dir / "logs"
    deployment = Deployment(
        host=host,
        api_port=api_port,
        flower_port=flower_port,
        flower=not no_flower,
        flower_auth=flower_auth,
        beat=not no_beat,
        concurrency=concurrency,
        logs=folder,
        beat_schedule=settings.data_dir / "celerybeat-schedule",
    )
    deployment.beat_schedule.parent.mkdir(parents=True, exist_ok=True)
    parts = plan(deployment)
    click.echo(f"starting {len(parts)} parts (logs in {folder})", err=True)
    supervisor = Supervisor(parts, folder, lambda line: click.echo(line, err=True))
    for sig in (signal.SIGTERM, signal.SIGHUP):  # kill, or the terminal closing: stop cleanly too
        signal.signal(sig, _interrupt)
    code = 0
    try:
        supervisor.start()
        click.echo(
            f"ready: API {parts[-1].url}"
            + "".join(f", Flower {p.url}" for p in parts if p.name == "flower")
            + "; Ctrl-C stops everything",
            err=True,
        )
        supervisor.watch()
    except KeyboardInterrupt:
        click.echo("stopping (workers finish what they hold)...", err=True)
    except PartFailed as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo("stopping the other parts...", err=True)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second one must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        for line in supervisor.stop(stop_timeout):
            click.echo(line, err=True)
    click.echo("stopped: no part left running" if code == 0 else "stopped after a failure", err=True)
    sys.exit(code)
