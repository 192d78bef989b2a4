"""The real stack for integration tests: Redis broker, Postgres, SeaweedFS S3, a separate worker process.

The S3 server is the session's SeaweedFS (`seaweed_endpoint`, tests/conftest.py), shared with the unit tests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops import stack as services

BUCKET = "pigreward-test"


@dataclass
class Stack:
    env: dict[str, str]
    database_url: str
    redis_url: str
    s3_endpoint: str
    image_root: Path
    worker_log: Path

    def s3(self):  # type: ignore[no-untyped-def]
        return services.s3_client(self.s3_endpoint)

    def put(self, key: str, data: bytes) -> str:
        self.s3().put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"


def png_bytes(image) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, seaweed_endpoint: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    image_root = tmp / "images"
    image_root.mkdir()
    with (
        services.redis_server(tmp) as redis_url,
        services.postgres_database() as database_url,
    ):
        env = {
            **services.stack_env(
                redis_url=redis_url,
                database_url=database_url,
                s3_endpoint=seaweed_endpoint,
                image_root=image_root,
                data_dir=tmp / "data",
            ),
            "PIGREWARD_MAX_IMAGE_PIXELS": str(40_000_000),
            # recovery at test speed (the fault suite, `pigreward bench faults`, uses the shipped values)
            "PIGREWARD_RECONCILE_INTERVAL_S": "2",
            "PIGREWARD_CLAIM_LEASE_S": "10",
            "PIGREWARD_RETRY_BACKOFF_S": "0.5",
            "PIGREWARD_RETRY_BACKOFF_MAX_S": "2",
        }
        with services.configured(env):
            st = Stack(env, database_url, redis_url, seaweed_endpoint, image_root, tmp / "worker.log")
            st.s3().create_bucket(Bucket=BUCKET)
            with services.celery_worker(env, "context,judge,bulk", st.worker_log):
                yield st
