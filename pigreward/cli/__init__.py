"""`pigreward`: the command line, one module per noun; each command is a few lines over the layers below.

Commands are loaded when they run (click's lazy-group pattern), so `pigreward --help` and a quick
`pigreward parse` do not pay for importing Celery, the database layer or the benchmarks.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

COMMANDS = {
    "demo": "pigreward.cli.demo:demo",
    "synth": "pigreward.cli.demo:synth",
    "worker": "pigreward.cli.services:worker",
    "serve": "pigreward.cli.services:serve",
    "api": "pigreward.cli.services:api_server",
    "flower": "pigreward.cli.services:flower",
    "up": "pigreward.cli.up:up",
    "check": "pigreward.cli.services:check",
    "reconcile": "pigreward.cli.services:reconcile",
    "status": "pigreward.cli.services:status",
    "parse": "pigreward.cli.protocols:parse",
    "judge": "pigreward.cli.judging:judge",
    "refs": "pigreward.cli.users:refs",
    "users": "pigreward.cli.users:users",
    "results": "pigreward.cli.judging:results",
    "calibrate": "pigreward.cli.calibration:calibrate",
    "keys": "pigreward.cli.keys:keys",
    "tenants": "pigreward.cli.tenants:tenants",
    "db": "pigreward.cli.db:db",
    "rescore": "pigreward.cli.rescoring:rescore",
    "flag": "pigreward.cli.rescoring:flag",
    "optimize": "pigreward.cli.optimization:optimize",
    "bench": "pigreward.cli.bench:bench",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported by name when they are used (or listed in --help)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, name = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), name)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        return command


class Main(LazyGroup):
    """Turns a startup or configuration mistake into one line naming the setting to fix (exit 2)
    instead of a traceback: bad settings, an unusable database URL or server, an unreachable broker."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # noqa: BLE001
            line = configuration_problem(exc)
            if line is None:
                raise
            click.echo(f"pigreward: error: {line}", err=True)
            ctx.exit(2)


def configuration_problem(exc: BaseException) -> str | None:
    """One line for the configuration mistakes people make, or None for anything else."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    from core.errors import BrokerUnavailable, ConfigurationError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        err = exc.errors(include_url=False, include_input=False)[0]
        name = "PIGREWARD_" + "_".join(str(p) for p in err["loc"]).upper()
        return f"{name}: {err['msg']}"
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return f"PIGREWARD_DATABASE_URL is not a usable database URL: {exc}"
    if isinstance(exc, OperationalError):
        reason = str(exc.orig or exc).strip().splitlines()[0]
        return f"cannot connect to the database (PIGREWARD_DATABASE_URL): {reason}"
    if isinstance(exc, ConfigurationError):
        return exc.message
    if isinstance(exc, BrokerUnavailable) or type(exc).__module__.startswith("kombu"):
        return f"cannot reach the broker (PIGREWARD_BROKER_URL): {exc}"
    return None


@click.group(cls=Main, lazy=COMMANDS)
@click.version_option(package_name="pigreward")
def main() -> None:
    """Personalized pairwise judging of text-to-image outputs (PIGReward) as a batch job queue."""
