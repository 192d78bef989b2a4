"""Where images come from: `s3://bucket/key` through boto3, and files confined to one root folder.

Only these two kinds of location are read; anything else (http://, ftp://, paths that climb out of
the root by `..` or a symlink) is refused with `ForbiddenLocation`, so user-supplied URIs can never
make a worker fetch arbitrary URLs or files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigurationError, ForbiddenLocation, ImageNotFound, ImageTooLarge, StoreUnavailable

_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "InvalidBucketName"}
_FORBIDDEN_CODES = {"AccessDenied", "403", "AllAccessDisabled"}
# Credentials problems are the operator's to fix (rotation, clock skew), not the input's: retried.
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "RequestTimeTooSkewed"}


@dataclass(frozen=True)
class StoreConfig:
    """What the store needs, read from settings once by the entry point."""

    image_root: Path
    max_bytes: int = 32 * 1024 * 1024
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    allowed_buckets: tuple[str, ...] = field(default_factory=tuple)
    max_connections: int = 64  # S3 connections kept per process: at least the reads it runs at once


NO_CREDENTIALS = (
    "S3 credentials are not configured: set PIGREWARD_S3_ACCESS_KEY_ID and PIGREWARD_S3_SECRET_ACCESS_KEY "
    "(or give the process an AWS credential chain)"
)


def _shown(uri: str) -> str:
    """A local image as clients named it: file://relative/path (a plain path gets the scheme)."""
    return uri if "://" in uri else f"file://{uri}"


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ForbiddenLocation(f"malformed S3 URI {uri!r}: expected s3://bucket/key")
    return bucket, key


class ImageStore:
    """Reads image bytes by URI, enforcing the root, the allowed buckets and the byte limit."""

    def __init__(self, config: StoreConfig, s3_client: Any | None = None) -> None:
        self.config = config
        self.root = config.image_root.resolve()
        self._s3 = s3_client
        self._lock = threading.Lock()

    def read(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            return self._read_s3(*split_s3(uri))
        if "://" in uri and not uri.startswith("file://"):
            scheme = uri.split("://", 1)[0]
            raise ForbiddenLocation(f"unsupported image location scheme {scheme!r}: use s3:// or file://")
        return self._read_file(self.resolve_file(uri), _shown(uri))

    def resolve_file(self, uri: str) -> Path:
        """The real path of a file:// URI (or plain path), which must lie inside the root."""
        raw = uri[len("file://") :] if uri.startswith("file://") else uri
        if not raw:
            raise ForbiddenLocation("empty file path")
        if "\x00" in raw:
            raise ForbiddenLocation("file path contains a NUL byte")
        candidate = Path(raw)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        try:
            real = candidate.resolve()  # follows symlinks, collapses '..'
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, over-long names
            raise ForbiddenLocation(f"{uri!r} cannot be resolved: {exc}") from exc
        if not real.is_relative_to(self.root):
            raise ForbiddenLocation(f"{uri!r} resolves outside the image root")
        return real

    def write_file(self, relative: str, data: bytes) -> str:
        """Store bytes under the root (demo, uploads); returns the file:// URI."""
        path = self.resolve_file(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"file://{path.relative_to(self.root)}"

    def put(self, uri: str, data: bytes) -> str:
        """Write bytes AT `uri` (s3://bucket/key, or file:// / a plain path inside the root) and
        return `uri` unchanged. The same refusals as reading apply (scheme, bucket allow-list, root
        confinement), and data over `max_bytes` is refused (it could never be read back). Files are
        written to a temporary sibling and renamed into place, so a reader never sees half an image.
        """
        if len(data) > self.config.max_bytes:
            raise ImageTooLarge(f"{len(data)} bytes for {uri!r}, over the limit of {self.config.max_bytes}")
        if uri.startswith("s3://"):
            self._put_s3(*split_s3(uri), data)
            return uri
        if "://" in uri and not uri.startswith("file://"):
            scheme = uri.split("://", 1)[0]
            raise ForbiddenLocation(f"unsupported image location scheme {scheme!r}: use s3:// or file://")
        path = self.resolve_file(uri)
        if path == self.root or path.is_dir():
            raise ForbiddenLocation(f"{uri!r} names a folder, not a file")
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.parent.resolve().is_relative_to(self.root):  # a symlinked folder raced in
                raise ForbiddenLocation(f"{uri!r} resolves outside the image root")
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide it from other readers
                fh.write(data)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise StoreUnavailable(f"could not write {uri!r}: {exc.strerror or type(exc).__name__}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return uri

    def _put_s3(self, bucket: str, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self.config.allowed_buckets and bucket not in self.config.allowed_buckets:
            raise ForbiddenLocation(f"bucket {bucket!r} is not in the allowed buckets")
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _FORBIDDEN_CODES or code == "NoSuchBucket":
                raise ForbiddenLocation(f"cannot write s3://{bucket}/{key} ({code})") from exc
            raise StoreUnavailable(f"S3 error writing s3://{bucket}/{key}: {code or exc}") from exc
        except NoCredentialsError as exc:
            raise ConfigurationError(NO_CREDENTIALS) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 unreachable writing s3://{bucket}/{key}: {exc}") from exc

    def _read_file(self, path: Path, shown: str) -> bytes:
        """Read at most max_bytes + 1 bytes, refusing a symlink swapped in after `resolve_file`.

        Messages name the file by its URI (`shown`), never by the server's path: they reach clients.
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EISDIR):
                raise ImageNotFound(f"no image file at {shown!r}") from exc
            if exc.errno == errno.ELOOP:
                raise ForbiddenLocation(f"{shown!r} became a symlink") from exc
            raise StoreUnavailable(f"could not open {shown!r}: {exc.strerror}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ImageNotFound(f"no image file at {shown!r} (not a regular file)")
        if info.st_size > self.config.max_bytes:
            os.close(fd)
            raise ImageTooLarge(
                f"image file is {info.st_size} bytes, over the limit of {self.config.max_bytes}"
            )
        with os.fdopen(fd, "rb") as fh:
            try:
                data = fh.read(self.config.max_bytes + 1)
            except OSError as exc:
                raise StoreUnavailable(f"could not read {shown!r}: {exc.strerror}") from exc
        if len(data) > self.config.max_bytes:  # grew after the size check
            raise ImageTooLarge(f"image file is over the limit of {self.config.max_bytes} bytes")
        return data

    @property
    def s3(self) -> Any:
        """One boto3 client per store (clients are thread-safe), made on first use."""
        with self._lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config

                self._s3 = boto3.client(
                    "s3",
                    endpoint_url=self.config.s3_endpoint_url,
                    region_name=self.config.s3_region,
                    aws_access_key_id=self.config.s3_access_key_id,
                    aws_secret_access_key=self.config.s3_secret_access_key,
                    config=Config(
                        connect_timeout=5,
                        read_timeout=30,
                        max_pool_connections=self.config.max_connections,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
            return self._s3

    def _read_s3(self, bucket: str, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self.config.allowed_buckets and bucket not in self.config.allowed_buckets:
            raise ForbiddenLocation(f"bucket {bucket!r} is not in the allowed buckets")
        try:
            obj = self.s3.get_object(Bucket=bucket, Key=key)
            size = int(obj.get("ContentLength") or 0)
            body = obj["Body"]
            if size > self.config.max_bytes:
                body.close()
                raise ImageTooLarge(
                    f"s3://{bucket}/{key} is {size} bytes, over the limit of {self.config.max_bytes}"
                )
            data: bytes = body.read(self.config.max_bytes + 1)
            body.close()
            if size and len(data) < size:  # the connection dropped mid-body; botocore does not say so
                raise StoreUnavailable(
                    f"S3 read of s3://{bucket}/{key} cut short ({len(data)} of {size} bytes)"
                )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise ImageNotFound(f"no object at s3://{bucket}/{key} ({code})") from exc
            if code in _FORBIDDEN_CODES:
                raise ForbiddenLocation(f"access to s3://{bucket}/{key} denied ({code})") from exc
            if code in _CREDENTIAL_CODES:
                raise StoreUnavailable(
                    f"S3 credentials rejected reading s3://{bucket}/{key} ({code})"
                ) from exc
            raise StoreUnavailable(f"S3 error reading s3://{bucket}/{key}: {code or exc}") from exc
        except NoCredentialsError as exc:
            raise ConfigurationError(NO_CREDENTIALS) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 unreachable reading s3://{bucket}/{key}: {exc}") from exc
        if len(data) > self.config.max_bytes:
            raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {self.config.max_bytes} bytes")
        return data
