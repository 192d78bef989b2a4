"""`pigreward up`: one command stands up the API, workers for every queue, beat and Flower on real
Redis, Postgres and S3 (SeaweedFS); a judgment, a JSONL batch and an optimization run finish; Flower
lists every worker under its own name; Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ops import stack as services
from ops.stack import REPO, free_port, wait_until
from tests.integration.conftest import png_bytes

pytestmark = pytest.mark.slow
BUCKET = "pigreward-up"


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    return png_bytes(Image.new("RGB", (96, 96), color))


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their pool children, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_one_command_runs_every_part_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with (
        services.redis_server(tmp_path) as redis_url,
        services.postgres_database() as database_url,
        services.seaweed_s3(tmp_path) as s3_endpoint,
    ):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
        env = {
            **clean,
            **services.stack_env(
                redis_url=redis_url,
                database_url=database_url,
                s3_endpoint=s3_endpoint,
                image_root=images,
                data_dir=tmp_path / "data",
            ),
            "PIGREWARD_FLOWER_USER": "ops",
            "PIGREWARD_FLOWER_PASSWORD": "s3cret",
        }

        def cli(*args: str, tenant: str | None = None) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "pigreward.cli", *args],
                cwd=REPO,
                env={**env, "PIGREWARD_DEFAULT_TENANT": tenant} if tenant else env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        s3 = services.s3_client(s3_endpoint)
        s3.create_bucket(Bucket=BUCKET)
        uris = []
        for i in range(6):
            key = f"img{i}.png"
            s3.put_object(Bucket=BUCKET, Key=key, Body=_png((40 * i, 200 - 30 * i, 90)))
            uris.append(f"s3://{BUCKET}/{key}")

        api_port, flower_port = free_port(), free_port()
        out = (tmp_path / "up.out").open("wb")
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pigreward.cli",
                "up",
                "--api-port",
                str(api_port),
                "--flower-port",
                str(flower_port),
                "-c",
                "2",
                "--logs",
                str(tmp_path / "logs"),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        said = lambda: (tmp_path / "up.out").read_text(errors="replace")  # noqa: E731
        try:
            wait_until(lambda: "ready: API" in said() or up.poll() is not None, 180, "pigreward up")
            assert up.poll() is None, said()
            for part in ("worker context,judge", "worker optimize", "worker bulk", "beat", "flower", "api"):
                assert f"ready  {part}" in said(), said()

            key = cli("keys", "create", "--tenant", "acme").strip()
            cli("tenants", "allow", "acme", f"s3://{BUCKET}/")
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{api_port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert api.post("/v1/users", json={"external_id": "alice"}).status_code == 201
            for i in range(3):
                ref = {"prompt": f"scene {i}", "chosen": uris[i], "rejected": uris[i + 3]}
                assert api.post("/v1/users/alice/references", json=ref).status_code == 201

            # one judgment (queue judge, context built on `context`)
            item = {"user": "alice", "prompt": "a harbour", "image_a": uris[0], "image_b": uris[4]}
            jid = api.post("/v1/judgments", json=item).json()["id"]
            final: dict[str, object] = {}

            def judged() -> bool:
                final.update(api.get(f"/v1/judgments/{jid}").json())
                return final["status"] not in ("queued", "running", "waiting")

            wait_until(judged, 120, "the judgment")
            assert final["status"] == "done", final

            # a JSONL batch (queue bulk)
            lines = [
                {"user": "alice", "prompt": f"p{i}", "image_a": uris[i], "image_b": uris[5 - i]}
                for i in range(3)
            ]
            body = "\n".join(json.dumps(x) for x in lines)
            created = api.post(
                "/v1/batches/jsonl", content=body, headers={"content-type": "application/x-ndjson"}
            )
            assert created.status_code == 202, created.text
            batch = f"/v1/batches/{created.json()['id']}"
            wait_until(lambda: api.get(batch).json()["finished"], 120, "the batch")
            assert api.get(batch).json()["counts"] == {"done": 3}

            # an optimization run (queue optimize), through the CLI on the same deployment
            run = cli(
                "optimize", "run", "--user", "alice", "--prompt", "a harbour", "--rounds", "1", "-k", "2",
                "--eval-seeds", "2", "--no-progress", tenant="acme",
            )  # fmt: skip
            assert "1 rounds; best prompt:" in run, run

            # Flower lists each worker under its own name
            flower = httpx.Client(
                base_url=f"http://127.0.0.1:{flower_port}", auth=("ops", "s3cret"), timeout=30
            )
            names: set[str] = set()

            def three_workers() -> bool:
                names.update(flower.get("/api/workers", params={"refresh": "true"}).json())
                return len(names) >= 3

            wait_until(three_workers, 60, "Flower's worker list", interval=1)
            prefixes = sorted(n.split("-")[1] if n.count("-") > 1 else n for n in names)
            assert len(names) == 3 and prefixes == ["bulk", "context", "optimize"], names

            children = _descendants(up.pid)
            assert len(children) >= 6, children  # six parts, plus their own children
        finally:
            if up.poll() is None:
                up.send_signal(signal.SIGINT)  # what Ctrl-C sends
            code = up.wait(120)
            out.close()
        assert code == 0, said()
        assert "stopped: no part left running" in said()
        time.sleep(0.5)
        left = [pid for pid in children if _alive(pid)]
        assert left == [], f"left behind: {left}\n{said()}"
        assert "Traceback" not in said()


def test_a_part_that_dies_stops_the_rest_and_says_why(tmp_path: Path) -> None:
    """The API cannot bind its port (taken): `pigreward up` names the part and its last log lines,
    stops the others and exits 1, leaving no process behind."""
    import socket

    with (
        services.redis_server(tmp_path) as redis_url,
        services.postgres_database() as database_url,
        socket.socket() as taken,
    ):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")},
            **services.stack_env(
                redis_url=redis_url,
                database_url=database_url,
                s3_endpoint="http://127.0.0.1:9",  # never reached: nothing is judged
                image_root=tmp_path,
                data_dir=tmp_path / "data",
            ),
        }
        up = subprocess.Popen(
            [sys.executable, "-m", "pigreward.cli", "up", "--api-port", str(taken.getsockname()[1])]
            + ["--flower-port", str(free_port()), "--no-beat", "--logs", str(tmp_path / "logs")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        children: set[int] = set()
        deadline = time.monotonic() + 120
        while up.poll() is None and time.monotonic() < deadline:
            children |= _descendants(up.pid)
            time.sleep(0.2)
        out = up.communicate(timeout=120)[0]
    assert up.returncode == 1, out
    assert "error: api exited with" in out and "address already in use" in out.lower(), out
    assert "stopped after a failure" in out and "Traceback" not in out.split("last lines")[0]
    assert len(children) >= 4, children  # three workers and Flower were running
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []
