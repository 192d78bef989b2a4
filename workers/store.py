"""Where images come from: `s3://bucket/key` through boto3, and files confined to one root folder.

Only these two kinds of location are read; anything else (http://, ftp://, paths that climb out of
the root by `..` or a symlink) is refused with `ForbiddenLocation`, so user-supplied URIs can never
make a worker fetch arbitrary URLs or files.

A read can be conditional (`fetch(uri, etag=...)`): S3 then answers 304 without the body when the
object still has that ETag, so a worker that holds the picture already is told it is unchanged
(keys may be overwritten: every load still asks the store). The GETs of the hot path go out signed
on kept-alive connections of their own (`DirectGets`): boto3's per-call work costs more CPU than
the rest of a judgment's orchestration; anything but a plain answer is read again through boto3.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import hmac
import http.client
import logging
import os
import ssl
import stat
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from core.errors import (
    ConfigurationError,
    ForbiddenLocation,
    ImageNotFound,
    ImageTooLarge,
    ImageUnreadable,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "InvalidBucketName"}
_FORBIDDEN_CODES = {"AccessDenied", "403", "AllAccessDisabled"}
_NOT_MODIFIED_CODES = {"304", "NotModified"}  # a conditional GET of an unchanged object
# Credentials problems are the operator's to fix (rotation, clock skew), not the input's: retried.
# The request itself is malformed for this store (a key it cannot hold, a bad argument): retrying the
# same location cannot help, so it is refused like a location outside the allowed ones.
# Only codes about the key itself: InvalidRequest/InvalidArgument can also be the bucket's or the
# operator's settings (SigV4 required, KMS), which are retried until fixed.
_INVALID_CODES = {"InvalidURI", "KeyTooLongError", "InvalidObjectName"}
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
    if key.endswith("/"):  # a "folder": stores differ (empty object, NoSuchKey, a write that keeps nothing)
        raise ForbiddenLocation(f"{uri!r} names a folder, not an object")
    if any(part in (".", "..") for part in key.split("/")) or any(ord(c) < 32 for c in key):
        # stores disagree on these (AWS keeps them, others refuse or normalize): never a real image key
        raise ForbiddenLocation(
            f"{uri!r}: S3 keys with '.' or '..' segments or control characters are refused"
        )
    return bucket, key


@dataclass(frozen=True)
class Fetched:
    """What a read found: the object's bytes, or None when it still has the ETag the read named."""

    data: bytes | None
    etag: str | None = None  # S3's ETag of these bytes (None for files)


MAX_BUCKETS = 1024  # bucket URLs remembered for direct GETs
MAX_ORIGINS = 64  # hosts with kept-alive connections; others are read through boto3
REFUSALS_TO_FORGET = 3
_SHAPE_STATUSES = {301, 307, 400, 403}
"""Answers that can mean a direct GET was shaped wrongly for its bucket (region, addressing style,
auth kind): if boto3 then reads the same object, direct GETs stop for that bucket."""


class _Stop(Exception):
    """Ends a request boto3 was building for `DirectGets.bucket_url`, before it is signed or sent."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class _SigV4:
    """Signs the one request `DirectGets` makes (GET, no query string, empty body) with AWS SigV4 as
    botocore's S3 signer does (a test checks them equal), with the day's signing key kept: ~30 us
    against botocore's ~250 us, half of a conditional GET's CPU. Credentials are read per request
    (they may refresh)."""

    def __init__(self, credentials: Any, region: str) -> None:
        self._credentials = credentials
        self._region = region
        self._key: tuple[tuple[str, str], bytes] | None = None  # (secret, day) -> signing key

    def headers(self, host: str, path: str) -> dict[str, str]:
        """The headers that authorize `GET path` on `host` (as sent in the Host header) now."""
        creds = self._credentials.get_frozen_credentials()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers = {"x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        signed = {"host": host, **headers}
        names = sorted(signed)
        canonical = "\n".join(
            [
                "GET",
                path,  # S3 signs the path as sent (already percent-encoded), not normalized
                "",  # no query string
                "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names),
                ";".join(names),
                _EMPTY_SHA256,
            ]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(creds.secret_key, day), to_sign.encode(), "sha256").hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers  # http.client sends Host itself, from the connection's host and port

    def _signing_key(self, secret: str, day: str) -> bytes:
        kept = self._key
        if kept is not None and kept[0] == (secret, day):
            return kept[1]
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), "sha256").digest()
        self._key = ((secret, day), key)
        return key


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class _Origin:
    """Keep-alive connections to one scheme://host:port, reused last-in first-out, one per thread
    at a time; a connection goes back only after a response read to its end."""

    def __init__(self, scheme: str, host: str, port: int | None, context: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port, self.context = scheme, host, port, context
        default = 443 if scheme == "https" else 80
        self.host_header = host if port in (None, default) else f"{host}:{port}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it served a request before (it may have gone stale since)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=5, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        conn.connect()  # 5 s to connect (boto3's connect_timeout), then 30 s per read
        assert conn.sock is not None  # connected above
        conn.sock.settimeout(30)
        return conn, False

    def give_back(self, conn: http.client.HTTPConnection, limit: int) -> None:
        with self._lock:
            if len(self._idle) < limit:
                self._idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        """Close the idle connections (one went stale: the server restarted or timed them out)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class DirectGets:
    """GetObject as one signed HTTP request, for the reads of the hot path.

    boto3 spends ~1.7 ms of CPU per GetObject (parameters, endpoint rules, event hooks, response
    parsing): more than the rest of a judgment's orchestration. Here the request goes where boto3
    would send it (each bucket's URL is learnt once from boto3's own endpoint rules, without
    sending anything), signed with the same credentials, on a kept-alive `http.client` connection:
    ~0.3 ms. Only a plain answer is taken (200, or 304 to a conditional GET); anything else — an
    error status, a redirect, a refused connection, a body cut short — gives None, and the store
    reads the object through boto3, whose retries, redirects and error codes decide exactly as
    before. A timeout is the store being unavailable at once: boto3 would wait as long again.
    """

    def __init__(self, probe_client: Any, credentials: Any, region: str, max_connections: int) -> None:
        self._probe = probe_client  # a client of its own: its event handlers must not touch reads
        self._signer = _SigV4(credentials, region)
        self._max_idle = max_connections
        self._origins: dict[tuple[str, str, int | None], _Origin] = {}
        self._urls: dict[str, tuple[_Origin, str] | None] = {}  # bucket -> (origin, path prefix) or None
        self._refusals: dict[str, int] = {}  # bucket -> direct GETs refused where boto3's read worked
        self._lock = threading.Lock()

    def bucket_url(self, bucket: str) -> str:
        """The URL boto3 would GET for key "k" of `bucket`, minus the "k" (no request is sent)."""

        def stop(request: Any, **_: Any) -> None:
            raise _Stop(request.url)

        handler = f"pigreward-direct-{bucket}"
        self._probe.meta.events.register("before-sign.s3.GetObject", stop, unique_id=handler)
        try:
            self._probe.get_object(Bucket=bucket, Key="k")
        except _Stop as found:
            url: str = found.url
        finally:
            self._probe.meta.events.unregister("before-sign.s3.GetObject", unique_id=handler)
        if not url.endswith("/k"):
            raise ValueError(f"unexpected GetObject URL shape {url!r}")
        return url[:-1]

    def _target(self, bucket: str) -> tuple[_Origin, str] | None:
        """The origin and path prefix of `bucket`'s URL; None where only boto3 reads it (a proxy is
        configured, or boto3 refuses the bucket name: its read then says why)."""
        with self._lock:
            if bucket in self._urls:
                return self._urls[bucket]
            if len(self._urls) >= MAX_BUCKETS:  # bucket names come from users: keep the map bounded
                self._urls.clear()
            target = None
            try:
                parts = urlsplit(self.bucket_url(bucket))
            except Exception:  # noqa: BLE001 - boto3's own read of the object reports it
                parts = None
            if parts is not None and parts.hostname and not _proxied(parts.geturl()):
                where = (parts.scheme, parts.hostname, parts.port)
                if where not in self._origins and len(self._origins) < MAX_ORIGINS:
                    context = _tls_context() if parts.scheme == "https" else None
                    if parts.scheme == "http" or context is not None:
                        self._origins[where] = _Origin(parts.scheme, parts.hostname, parts.port, context)
                if where in self._origins:
                    target = (self._origins[where], parts.path or "/")
            self._urls[bucket] = target
            return target

    def refused(self, bucket: str) -> None:
        """A direct GET was refused where boto3's read of the same object worked: after
        REFUSALS_TO_FORGET of those (not one: a credential rotation can refuse a request or two), the
        bucket is read through boto3 from then on, and a WARNING says so."""
        with self._lock:
            self._refusals[bucket] = self._refusals.get(bucket, 0) + 1
            if self._refusals[bucket] < REFUSALS_TO_FORGET or self._urls.get(bucket) is None:
                return
            self._urls[bucket] = None
        log.warning(
            "S3 bucket %r: direct GETs were refused %d times where boto3 read the objects; "
            "reading it through boto3 from now on (slower)",
            bucket,
            REFUSALS_TO_FORGET,
        )

    def get(self, bucket: str, key: str, etag: str | None, max_bytes: int) -> tuple[int, Fetched | None]:
        """(HTTP status or 0 for a network error, what was read if the answer was plain)."""
        target = self._target(bucket)
        if target is None:
            return 0, None
        origin, prefix = target
        path = prefix + quote(key, safe="/~")
        shown = f"s3://{bucket}/{key}"
        try:
            headers = self._signer.headers(origin.host_header, path)
        except Exception:  # noqa: BLE001 - credentials that cannot be refreshed: boto3's read says why
            return 0, None
        if etag is not None:
            headers["If-None-Match"] = etag
        for _attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more
            try:
                conn, reused = origin.take()
            except TimeoutError as exc:
                raise StoreUnavailable(f"S3 unreachable reading {shown}: connect timed out") from exc
            except OSError:
                return 0, None
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
            except TimeoutError as exc:  # boto3 would wait as long again, and again: the row waits
                conn.close()
                raise StoreUnavailable(f"S3 unreachable reading {shown}: read timed out") from exc
            except (OSError, http.client.HTTPException):
                conn.close()
                if reused:
                    origin.clear()
                    continue
                return 0, None
            return self._answer(origin, conn, response, shown, etag, max_bytes)
        return 0, None

    def _answer(
        self,
        origin: _Origin,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        shown: str,
        etag: str | None,
        max_bytes: int,
    ) -> tuple[int, Fetched | None]:
        """(status, what was read if the answer was plain); the connection is kept only if its
        response was read to the end."""
        status, found = response.status, None
        try:
            if status == 304:
                response.read()
                found = Fetched(None, response.getheader("ETag") or etag)
            elif status == 200:
                size = int(response.getheader("Content-Length") or 0)
                if size > max_bytes:
                    raise ImageTooLarge(f"{shown} is {size} bytes, over the limit of {max_bytes}")
                data = response.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise ImageTooLarge(f"{shown} is over the limit of {max_bytes} bytes")
                if len(data) >= size and response.isclosed():  # else: cut short, boto3 reads it
                    found = Fetched(data, response.getheader("ETag"))
        except TimeoutError as exc:
            raise StoreUnavailable(f"S3 unreachable reading {shown}: read timed out") from exc
        except (OSError, http.client.HTTPException):
            found = None
        finally:
            if found is not None and not response.will_close:
                origin.give_back(conn, self._max_idle)
            else:
                conn.close()
        return status, found


def _tls_context() -> ssl.SSLContext | None:
    """Certificates checked against the bundle botocore uses (AWS_CA_BUNDLE, else its default);
    None if that bundle cannot be loaded: such buckets are read through boto3, which says why."""
    from botocore.httpsession import DEFAULT_CA_BUNDLE

    try:
        return ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or DEFAULT_CA_BUNDLE)
    except (OSError, ssl.SSLError):
        return None


def _proxied(url: str) -> bool:
    """Whether botocore would send requests to `url` through a proxy from the environment."""
    scheme, _, rest = url.partition("://")
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(rest.split("/")[0])


class ImageStore:
    """Reads image bytes by URI, enforcing the root, the allowed buckets and the byte limit."""

    def __init__(self, config: StoreConfig, s3_client: Any | None = None) -> None:
        self.config = config
        self.root = config.image_root.resolve()
        self._s3 = s3_client  # an injected client is used for every read (no direct GETs)
        self._direct: DirectGets | None = None
        self._lock = threading.Lock()

    def fetch(self, uri: str, etag: str | None = None) -> Fetched:
        """Read `uri`; with the `etag` of an earlier read of this S3 object, the answer is
        `Fetched(None, etag)` when the object still has it (nothing transferred). Files are read."""
        if uri.startswith("s3://"):
            return self._fetch_s3(*split_s3(uri), etag=etag)
        return Fetched(self.read(uri))

    def read(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            data = self._fetch_s3(*split_s3(uri), etag=None).data
            assert data is not None  # an unconditional read always has the bytes
            return data
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
        if not data:  # no image is empty; and an empty S3 PUT leaves botocore's next one hanging 30 s
            raise ImageUnreadable(f"refusing to write an empty image to {uri!r}")
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
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        if self.config.allowed_buckets and bucket not in self.config.allowed_buckets:
            raise ForbiddenLocation(f"bucket {bucket!r} is not in the allowed buckets")
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if (
                code in _FORBIDDEN_CODES
                or code in _INVALID_CODES
                or code in ("NoSuchBucket", "InvalidBucketName")
            ):
                raise ForbiddenLocation(f"cannot write s3://{bucket}/{key} ({code})") from exc
            raise StoreUnavailable(f"S3 error writing s3://{bucket}/{key}: {code or exc}") from exc
        except NoCredentialsError as exc:
            raise ConfigurationError(NO_CREDENTIALS) from exc
        except ParamValidationError as exc:
            raise ForbiddenLocation(f"malformed S3 location s3://{bucket}/{key}: {exc}") from exc
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
                self._s3, self._direct = self._clients()
            return self._s3

    def _clients(self) -> tuple[Any, DirectGets | None]:
        """The boto3 client, and direct GETs signed with the same credentials (none without any:
        boto3's read then says what is missing)."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.config.s3_access_key_id,
            aws_secret_access_key=self.config.s3_secret_access_key,
            region_name=self.config.s3_region,
        )
        config = Config(
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=self.config.max_connections,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        client = session.client("s3", endpoint_url=self.config.s3_endpoint_url, config=config)
        credentials = session.get_credentials()
        if credentials is None:
            return client, None
        probe = session.client("s3", endpoint_url=self.config.s3_endpoint_url, config=config)
        return client, DirectGets(probe, credentials, client.meta.region_name, self.config.max_connections)

    def _fetch_s3(self, bucket: str, key: str, etag: str | None) -> Fetched:
        if self.config.allowed_buckets and bucket not in self.config.allowed_buckets:
            raise ForbiddenLocation(f"bucket {bucket!r} is not in the allowed buckets")
        client = self.s3
        direct, status = self._direct, 0
        if direct is not None:
            status, found = direct.get(bucket, key, etag, self.config.max_bytes)
            if found is not None:
                return found
        fetched = self._get_s3(client, bucket, key, etag)
        if direct is not None and status in _SHAPE_STATUSES:
            direct.refused(bucket)  # boto3 reads what a direct GET was refused: its shape may be wrong
        return fetched

    def _get_s3(self, client: Any, bucket: str, key: str, etag: str | None) -> Fetched:
        """GetObject through boto3 (retries, region redirects), its errors classified."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        try:
            if etag is None:
                obj = client.get_object(Bucket=bucket, Key=key)
            else:
                obj = client.get_object(Bucket=bucket, Key=key, IfNoneMatch=etag)
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
            if etag is not None and code in _NOT_MODIFIED_CODES:
                return Fetched(None, etag)
            if code in _NOT_FOUND_CODES:
                raise ImageNotFound(f"no object at s3://{bucket}/{key} ({code})") from exc
            if code in _FORBIDDEN_CODES:
                raise ForbiddenLocation(f"access to s3://{bucket}/{key} denied ({code})") from exc
            if code in _INVALID_CODES:
                raise ForbiddenLocation(f"S3 refuses the location s3://{bucket}/{key} ({code})") from exc
            if code in _CREDENTIAL_CODES:
                raise StoreUnavailable(
                    f"S3 credentials rejected reading s3://{bucket}/{key} ({code})"
                ) from exc
            raise StoreUnavailable(f"S3 error reading s3://{bucket}/{key}: {code or exc}") from exc
        except NoCredentialsError as exc:
            raise ConfigurationError(NO_CREDENTIALS) from exc
        except ParamValidationError as exc:  # e.g. a bucket name boto3 refuses before sending
            raise ForbiddenLocation(f"malformed S3 location s3://{bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 unreachable reading s3://{bucket}/{key}: {exc}") from exc
        if len(data) > self.config.max_bytes:
            raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {self.config.max_bytes} bytes")
        tag = obj.get("ETag")
        return Fetched(data, str(tag) if tag else None)
