"""Fixtures shared by the unit and the integration tests: one real S3 server (SeaweedFS) per session.

`weed server` takes a few seconds to start, so one runs for the whole session; each test that needs
buckets of its own makes them with `new_bucket`, whose names are unique (and DNS-valid), so tests
never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ops.stack import s3_client, seaweed_s3


@pytest.fixture(scope="session")
def seaweed_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The S3 endpoint URL of a private SeaweedFS, started once per session (any credentials work)."""
    with seaweed_s3(tmp_path_factory.mktemp("seaweed")) as endpoint:
        yield endpoint


@pytest.fixture()
def seaweed(seaweed_endpoint: str) -> Any:
    """A boto3 S3 client of the session's SeaweedFS."""
    return s3_client(seaweed_endpoint)


@pytest.fixture()
def new_bucket(seaweed: Any) -> Callable[[str], str]:
    """Makes a bucket named `<stem>-<8 hex digits>` on the session's SeaweedFS and returns its name."""

    def make(stem: str) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        seaweed.create_bucket(Bucket=name)
        return name

    return make
