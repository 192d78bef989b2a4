"""Which image locations a tenant's requests may name: tenant-scoped images.

The service's credentials can read every object of every bucket they reach, so the API must not take
an image URI on the client's word. A tenant may name only URIs under the prefixes an operator granted
it (`pigreward tenants allow acme s3://bucket/acme/`) and its own uploads (`uploads/<tenant id>/`
in the upload bucket or image root). Nothing granted means nothing but uploads: the API fails closed.
The viewer applies the same scope when it serves a picture, so a grant taken back hides the pictures
too. The Python path (`tasks.judge.delay`) runs inside the deployment and is not scoped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.requests import S3_BUCKET

UPLOADS = "uploads"


class OutOfScope(ValueError):
    """An image location the tenant may not name (answered 403 by the API)."""


def check_prefix(prefix: str) -> str:
    """A grantable prefix, normalized to end with '/': s3://bucket/[path/] or file://path/."""
    if prefix.startswith("s3://"):
        bucket, _, path = prefix[len("s3://") :].partition("/")
        if not re.fullmatch(S3_BUCKET, bucket):
            raise ValueError(f"{prefix!r}: S3 prefixes look like s3://bucket/ or s3://bucket/path/")
    elif prefix.startswith("file://"):
        path = prefix[len("file://") :]
        if not path or path.startswith("/"):
            raise ValueError(f"{prefix!r}: file prefixes are relative to the image root, like file://team-a/")
    else:
        raise ValueError(f"{prefix!r}: a prefix starts with s3:// or file://")
    if path and _bad_segments(path.rstrip("/")):
        raise ValueError(f"{prefix!r}: no empty, '.' or '..' path segments")
    return prefix if prefix.endswith("/") else prefix + "/"


def _bad_segments(path: str) -> bool:
    return any(part in ("", ".", "..") for part in path.split("/"))


@dataclass(frozen=True)
class ImageScope:
    """The prefixes one tenant may name, its upload prefix included."""

    tenant_id: int
    prefixes: Sequence[str]
    upload_bucket: str | None = None

    @property
    def upload_prefix(self) -> str:
        where = f"s3://{self.upload_bucket}/" if self.upload_bucket else "file://"
        return f"{where}{UPLOADS}/{self.tenant_id}/"

    def allows(self, uri: str) -> bool:
        scheme, sep, rest = uri.partition("://")
        if not sep or scheme not in ("s3", "file") or "\\" in rest:
            return False
        path = rest.partition("/")[2] if scheme == "s3" else rest
        if not path or _bad_segments(path):
            return False
        return any(uri.startswith(p) for p in (*self.prefixes, self.upload_prefix))

    def check(self, uri: str, field: str) -> str:
        if not self.allows(uri):
            raise OutOfScope(
                f"{field}: {uri[:200]!r} is outside this tenant's image prefixes "
                "(an operator grants them: pigreward tenants allow TENANT PREFIX; uploads are always allowed)"
            )
        return uri
