"""Flower next to a real worker: it sees the worker and a finished judgment, behind basic auth."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.flower import FlowerConfigError, flower_command, run_flower
from ops.stack import celery_worker, free_port, wait_until
from tasks import judge
from tests.integration.conftest import Stack
from tests.integration.helpers import image, user_who_likes_warm

AUTH = ("ops", "s3cret:with-colon")


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Flower on a free loopback port with basic auth; yields its base URL."""
    port = free_port()
    log = tmp_path / "flower.log"
    out = log.open("ab")
    proc = run_flower(
        stack.env["PIGREWARD_BROKER_URL"],
        port=port,
        basic_auth=":".join(AUTH),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200,
            60,
            "flower",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"flower exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        out.close()
        print(log.read_text()[-2000:])  # noqa: T201 - shown by pytest only when a test fails


def test_flower_shows_the_worker_and_a_finished_judgment(stack: Stack, flower: str) -> None:
    client = httpx.Client(base_url=flower, auth=AUTH, timeout=30)

    # credentials protect the API (and a wrong password is no better than none)
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/tasks", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401

    workers: dict = {}

    def worker_listed() -> bool:
        nonlocal workers
        workers = client.get("/api/workers", params={"refresh": 1}).raise_for_status().json()
        return any(
            "judge" in {q["name"] for q in info.get("active_queues") or []}
            and "pigreward.judge" in (info.get("registered") or [])
            for info in workers.values()
        )

    wait_until(worker_listed, 60, "the stack's worker in Flower's /api/workers", interval=1)

    user_who_likes_warm(stack, "flower-user")
    a = image(stack, "flower/a.png", warmth=0.9, seed=71)
    b = image(stack, "flower/b.png", warmth=0.1, seed=72)
    # Flower learns of tasks from events sent while it listens: re-run (a new judgment) until one lands
    deadline = time.monotonic() + 120
    seen: dict | None = None
    attempt = 0
    while seen is None and time.monotonic() < deadline:
        attempt += 1
        result = judge.delay("flower-user", f"a warm evening #{attempt}", a, b)
        summary = result.get(timeout=60)
        assert summary["status"] == "done", summary
        until = time.monotonic() + 10
        while time.monotonic() < until:
            tasks = client.get("/api/tasks", params={"taskname": "pigreward.judge"}).raise_for_status().json()
            task = tasks.get(result.id)
            if task and task["state"] == "SUCCESS":
                seen = task
                break
            time.sleep(0.5)
    assert seen is not None, "Flower never listed a SUCCESS pigreward.judge task"
    assert seen["name"] == "pigreward.judge" and seen["worker"] in workers

    # the single-task view agrees; and it too needs credentials
    assert client.get(f"/api/task/info/{seen['uuid']}").json()["state"] == "SUCCESS"
    assert httpx.get(f"{flower}/api/task/info/{seen['uuid']}", timeout=10).status_code == 401


def test_workers_on_one_host_are_listed_under_their_own_names(
    stack: Stack, flower: str, tmp_path: Path
) -> None:
    """Two more `pigreward worker`s on this host: Celery's default name (celery@host) would be the same
    for all of them, and Flower would list one."""
    client = httpx.Client(base_url=flower, auth=AUTH, timeout=30)
    with (
        celery_worker(stack.env, "bulk", tmp_path / "bulk.log", concurrency=1) as bulk,
        celery_worker(stack.env, "optimize", tmp_path / "optimize.log", concurrency=1) as optimize,
    ):
        wanted = {f"pigreward-bulk-{bulk.pid}@", f"pigreward-optimize-{optimize.pid}@"}
        names: list[str] = []

        def both_listed() -> bool:
            nonlocal names
            names = list(client.get("/api/workers", params={"refresh": 1}).raise_for_status().json())
            return all(any(n.startswith(w) for n in names) for w in wanted)

        wait_until(both_listed, 60, f"{wanted} in Flower's /api/workers", interval=1)
    assert len(names) == len(set(names)) >= 3  # the stack's own worker too


def test_worker_names_are_unique_per_process() -> None:
    from pigreward.cli.services import ALL_QUEUES, worker_name

    assert worker_name(ALL_QUEUES, 4242) == "pigreward-4242@%h"
    assert worker_name("context, judge", 7) == "pigreward-context-judge-7@%h"
    assert worker_name("bulk", 7) != worker_name("bulk", 8)


# -- the launcher refuses unsafe configurations (no Flower started) -------------------------------


def test_auth_is_required_and_no_auth_stays_on_loopback() -> None:
    broker = "redis://127.0.0.1:6379/0"
    with pytest.raises(FlowerConfigError, match="basic auth is required"):
        flower_command(broker)
    with pytest.raises(FlowerConfigError, match="without authentication"):
        flower_command(broker, address="0.0.0.0", no_auth=True)
    with pytest.raises(FlowerConfigError, match="without authentication"):
        flower_command(broker, address="", no_auth=True)  # "" is every interface
    argv, env = flower_command(broker, address="::1", no_auth=True, environ={"FLOWER_BASIC_AUTH": "x:y"})
    assert "FLOWER_BASIC_AUTH" not in env and "--address=::1" in argv
    argv, env = flower_command(broker, address="10.0.0.5", basic_auth="ops:pw")  # allowed with auth
    assert "--address=10.0.0.5" in argv


def test_credentials_and_broker_travel_in_the_environment_not_argv() -> None:
    broker = "redis://:brokerpass@127.0.0.1:6379/0"
    argv, env = flower_command(
        broker, port=5601, basic_auth="ops:pw", extra=["--persistent=True"], environ={}
    )
    assert env["FLOWER_BASIC_AUTH"] == "ops:pw" and env["PIGREWARD_BROKER_URL"] == broker
    assert not any("pw" in a or "brokerpass" in a for a in argv)
    assert argv[-4:] == ["flower", "--address=127.0.0.1", "--port=5601", "--persistent=True"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"basic_auth": "ops"}, "user:password"),
        ({"basic_auth": ":pw"}, "user:password"),
        ({"basic_auth": "ops:a,b"}, "','"),
        ({"basic_auth": "ops:pw", "extra": ["--address=0.0.0.0"]}, "run_flower's own arguments"),
        ({"basic_auth": "ops:pw", "extra": ["--basic-auth=x:y"]}, "run_flower's own arguments"),
        ({"no_auth": True, "broker_url": "memory://"}, "memory://"),
    ],
)
def test_malformed_or_overriding_settings_are_refused(kwargs: dict, message: str) -> None:
    kwargs = {"broker_url": "redis://127.0.0.1:6379/0", **kwargs}
    with pytest.raises(FlowerConfigError, match=message):
        flower_command(**kwargs)
