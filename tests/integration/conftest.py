"""The real stack for integration tests: Redis broker, Postgres, moto S3, a separate worker process."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.support import services

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
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def put(self, key: str, data: bytes) -> str:
        self.s3().put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"


def png_bytes(image) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    image_root = tmp / "images"
    image_root.mkdir()
    with (
        services.redis_server(tmp) as redis_url,
        services.postgres_database() as database_url,
        services.moto_s3() as s3_endpoint,
    ):
        env = {
            "PIGREWARD_BROKER_URL": f"{redis_url}/0",
            "PIGREWARD_RESULT_BACKEND": f"{redis_url}/1",
            "PIGREWARD_DATABASE_URL": database_url,
            "PIGREWARD_S3_ENDPOINT_URL": s3_endpoint,
            "PIGREWARD_S3_ACCESS_KEY_ID": "testing",
            "PIGREWARD_S3_SECRET_ACCESS_KEY": "testing",
            "PIGREWARD_IMAGE_ROOT": str(image_root),
            "PIGREWARD_DATA_DIR": str(tmp / "data"),
            "PIGREWARD_MAX_IMAGE_PIXELS": str(40_000_000),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        from models.db import upgrade
        from pigreward.settings import get_settings, reset_settings
        from tasks.app import app, celery_config
        from tasks.runtime import reset_resources

        reset_settings()
        reset_resources()
        app.conf.update(celery_config(get_settings()))
        upgrade(database_url)
        st = Stack(env, database_url, redis_url, s3_endpoint, image_root, tmp / "worker.log")
        st.s3().create_bucket(Bucket=BUCKET)
        with services.celery_worker(env, "context,judge,bulk", st.worker_log):
            try:
                yield st
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
                reset_settings()
                reset_resources()
