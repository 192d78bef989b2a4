"""A private stack on this machine: Redis, a fresh Postgres database, an S3 server, worker processes.

What the integration tests (as fixtures) and the throughput benchmarks stand the project up on, and a
way to try a deployment locally. Nothing is mocked: each context manager starts (or creates) the
real thing on 127.0.0.1 and removes it afterwards. A missing binary or an unreachable Postgres is an
error with instructions.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding our packages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private redis-server on a free port; yields its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: apt-get install redis-server (or brew install redis)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        wait_until(client.ping, 10, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def postgres_admin_url() -> str:
    return os.environ.get("PIGREWARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named database on the test Postgres server; dropped afterwards.

    The server comes from PIGREWARD_TEST_POSTGRES (an admin URL; default: local trust auth).
    """
    admin = postgres_admin_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"cannot reach Postgres at {admin!r} ({exc}). Start it (pg_ctlcluster 15 main start) "
            "or point PIGREWARD_TEST_POSTGRES at an admin URL."
        ) from exc
    name = f"pigreward_test_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server (real HTTP, S3 protocol) on a free port; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for a moto endpoint (moto accepts any credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def stack_env(
    *, redis_url: str, database_url: str, s3_endpoint: str, image_root: Path, data_dir: Path
) -> dict[str, str]:
    """The PIGREWARD_* settings that point the project at a private Redis, Postgres and moto S3."""
    return {
        "PIGREWARD_BROKER_URL": f"{redis_url}/0",
        "PIGREWARD_RESULT_BACKEND": f"{redis_url}/1",
        "PIGREWARD_DATABASE_URL": database_url,
        "PIGREWARD_S3_ENDPOINT_URL": s3_endpoint,
        "PIGREWARD_S3_ACCESS_KEY_ID": "testing",
        "PIGREWARD_S3_SECRET_ACCESS_KEY": "testing",
        "PIGREWARD_IMAGE_ROOT": str(image_root),
        "PIGREWARD_DATA_DIR": str(data_dir),
    }


@contextmanager
def configured(env: dict[str, str]) -> Iterator[None]:
    """This process configured by `env`: settings, resources and the Celery app rebuilt, the database
    migrated; the previous environment restored afterwards."""
    from core.settings import get_settings, reset_settings
    from models.db import upgrade
    from tasks.app import app, celery_config
    from tasks.runtime import reset_resources

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        reset_settings()
        reset_resources()
        app.conf.update(celery_config(get_settings()))
        upgrade(env["PIGREWARD_DATABASE_URL"])
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()
        reset_resources()


@contextmanager
def celery_worker(
    env: dict[str, str], queues: str, log: Path, pool: str = "threads", concurrency: int = 4
) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process (`pigreward worker`), ready once Celery logs `ready.`."""
    cmd = [
        sys.executable,
        "-m",
        "pigreward.cli",
        "worker",
        f"--queues={queues}",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--loglevel=INFO",
    ]
    out = log.open("ab")
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 60, "celery worker")
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        out.close()
