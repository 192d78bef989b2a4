"""Flower, Celery's web monitor, against the configured broker: loopback and basic auth by default.

    PIGREWARD_FLOWER_USER=ops PIGREWARD_FLOWER_PASSWORD=... python -m ops.flower [--port 5555]
    python -m ops.flower --no-auth                   # local use only: refused off loopback

Flower runs as `python -m celery -A tasks flower` (its own Celery command), so it loads our app and
sees our task names; the broker comes from `--broker` or PIGREWARD_BROKER_URL (settings). Credentials
and the broker URL reach Flower through its environment (FLOWER_BASIC_AUTH, PIGREWARD_BROKER_URL),
never its command line, which any local user can read in `ps`.

What Flower 2.2 protects with basic auth: the UI and `/api/*` (a request without credentials gets
401). Not protected: `/metrics` (Flower's own Prometheus metrics, e.g. task counts by name and
worker) and `/healthcheck`. Basic auth is plain text over HTTP: off loopback, put TLS in front
(`--certfile`/`--keyfile` pass through to Flower, or a reverse proxy). With `--no-auth`, Flower's API
answers 401 unless FLOWER_UNAUTHENTICATED_API=true is set in the environment (Flower's own rule).
Flower learns about tasks from worker events (`worker_send_task_events`, `task_send_sent_event` in
tasks/app.py): it shows only tasks that ran while it was connected (add `--persistent=True` to keep
its state across restarts).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
USER_ENV = "PIGREWARD_FLOWER_USER"
PASSWORD_ENV = "PIGREWARD_FLOWER_PASSWORD"
# Set by run_flower itself: passing them again in `extra` would silently override the checks.
RESERVED = {"address", "port", "basic_auth", "auth", "unix_socket", "broker", "b", "a", "app"}


class FlowerConfigError(ValueError):
    """An unsafe or malformed Flower configuration: Flower is not started."""


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name or "" (all interfaces)


def check_basic_auth(basic_auth: str) -> str:
    user, sep, password = basic_auth.partition(":")
    if not sep or not user or not password:
        raise FlowerConfigError("basic auth must be 'user:password' with a non-empty user and password")
    if "," in basic_auth:  # Flower splits FLOWER_BASIC_AUTH on commas (several credentials)
        raise FlowerConfigError("basic auth user and password must not contain ','")
    return basic_auth


def flower_command(
    broker_url: str,
    port: int = 5555,
    address: str = "127.0.0.1",
    basic_auth: str | None = None,
    extra: Sequence[str] = (),
    *,
    no_auth: bool = False,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start Flower; raises FlowerConfigError when unsafe."""
    if broker_url.startswith("memory://"):
        raise FlowerConfigError(
            "the broker is memory:// (embedded): Flower cannot see it. Set PIGREWARD_BROKER_URL=redis://..."
        )
    if basic_auth is None and not no_auth:
        raise FlowerConfigError(
            f"basic auth is required: pass user:password (or set {USER_ENV} and {PASSWORD_ENV}); "
            "--no-auth is for local use on a loopback address only"
        )
    if basic_auth is None and not is_loopback(address):
        raise FlowerConfigError(f"refusing to serve Flower on {address!r} without authentication")
    if not 0 <= port <= 65535:
        raise FlowerConfigError(f"port {port} is out of range")
    for arg in extra:
        name = arg.lstrip("-").partition("=")[0].replace("-", "_")
        if arg.startswith("-") and name in RESERVED:
            raise FlowerConfigError(f"{arg!r}: set this through run_flower's own arguments")
    env = dict(os.environ if environ is None else environ)
    env["PIGREWARD_BROKER_URL"] = broker_url
    # `-A tasks` must import from this checkout wherever Flower is started (its cwd holds its state)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("FLOWER_BASIC_AUTH", None)
    env.pop("FLOWER_ADDRESS", None)
    env.pop("FLOWER_PORT", None)
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = check_basic_auth(basic_auth)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "flower",
        f"--address={address}",
        f"--port={port}",
        *extra,
    ]
    return argv, env


def run_flower(
    broker_url: str,
    port: int = 5555,
    address: str = "127.0.0.1",
    basic_auth: str | None = None,
    extra: Sequence[str] = (),
    *,
    no_auth: bool = False,
    exec_: bool = False,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start Flower as a child process (returned), or with `exec_=True` replace this process by it."""
    argv, env = flower_command(broker_url, port, address, basic_auth, extra, no_auth=no_auth)
    if exec_:
        os.execve(argv[0], argv, env)  # does not return
    return subprocess.Popen(argv, env=env, **popen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.flower",
        description="Flower (Celery monitor) on the configured broker. Other options go to Flower.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--broker", default=None, help="broker URL (default: PIGREWARD_BROKER_URL / settings)"
    )
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--address", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--user", default=os.environ.get(USER_ENV), help=f"basic auth user (env {USER_ENV})")
    parser.add_argument(
        "--password-env",
        default=PASSWORD_ENV,
        help=f"name of the environment variable holding the password (default {PASSWORD_ENV})",
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="no authentication, for local use (loopback only)"
    )
    args, extra = parser.parse_known_args(argv)
    broker = args.broker
    if broker is None:
        from core.settings import get_settings

        broker = get_settings().broker_url
    password = os.environ.get(args.password_env)
    basic_auth = None
    if not args.no_auth:  # the password only ever comes from the environment, never argv
        if not args.user or not password:
            parser.error(f"basic auth needs a user and a password: set {USER_ENV} and {args.password_env}")
        basic_auth = f"{args.user}:{password}"
    try:
        run_flower(broker, args.port, args.address, basic_auth, extra, no_auth=args.no_auth, exec_=True)
    except FlowerConfigError as exc:
        parser.error(str(exc))
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
