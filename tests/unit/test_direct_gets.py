"""S3 reads of the hot path: GETs signed by `_SigV4` (checked against botocore's signer, since the
test server accepts any signature), sent on kept-alive connections, conditional on the ETag of a
cached picture; anything but a plain answer is read again through boto3."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from PIL import Image

from core.errors import ImageNotFound, ImageTooLarge
from workers import imaging
from workers.imaging import ImageLimits, ImageLoader
from workers.store import REFUSALS_TO_FORGET, Fetched, ImageStore, StoreConfig, _SigV4

FIXED = dt.datetime(2026, 3, 4, 5, 6, 7)


class _FrozenClock(dt.datetime):
    @classmethod
    def utcnow(cls) -> dt.datetime:  # botocore's clock
        return FIXED

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # ours
        return FIXED.replace(tzinfo=tz)


@pytest.mark.parametrize("token", [None, "session/token+with=chars"])
@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("127.0.0.1:8333", "/imgs/dir/b%20c.png"),
        ("gen-images.s3.eu-west-1.amazonaws.com", "/a%2Bb/%C3%BC~x.png"),
        ("s3.example.com", "/prefix/bucket/k"),
    ],
)
def test_the_signature_is_botocores(token: str | None, host: str, path: str) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    request = AWSRequest(method="GET", url=f"http://{host}{path}")
    with mock.patch("botocore.auth.datetime.datetime", _FrozenClock):
        S3SigV4Auth(creds, "s3", "eu-west-1").add_auth(request)
        ours = _SigV4(creds, "eu-west-1").headers(host, path)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
    assert ours.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")


def _clock_at(when: dt.datetime) -> type[dt.datetime]:
    class Clock(_FrozenClock):
        @classmethod
        def utcnow(cls) -> dt.datetime:
            return when

        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:
            return when.replace(tzinfo=tz)

    return Clock


def test_the_kept_signing_key_follows_the_day_and_the_credentials() -> None:
    """One signer over midnight and a credential rotation: each request still signs as botocore does."""
    creds = Credentials("AKIDEXAMPLE", "secret-one")
    signer = _SigV4(creds, "us-east-1")
    host, path = "127.0.0.1:8333", "/b/k.png"
    for when, secret in (
        (dt.datetime(2026, 3, 4, 23, 59, 59), "secret-one"),
        (dt.datetime(2026, 3, 5, 0, 0, 1), "secret-one"),  # the next day: a new key
        (dt.datetime(2026, 3, 5, 0, 0, 2), "secret-two"),  # rotated: a new key the same day
    ):
        creds.secret_key = secret
        request = AWSRequest(method="GET", url=f"http://{host}{path}")
        with mock.patch("botocore.auth.datetime.datetime", _clock_at(when)):
            S3SigV4Auth(creds, "s3", "us-east-1").add_auth(request)
            ours = signer.headers(host, path)
        assert ours["authorization"] == request.headers["Authorization"]


def _store(endpoint: str, root: Path, **config: Any) -> ImageStore:
    return ImageStore(
        StoreConfig(
            image_root=root,
            s3_endpoint_url=endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
            **config,
        )
    )


def _read_once(endpoint: str, seaweed: Any, bucket: str, root: Path) -> tuple[str, ImageStore]:
    """`bucket` holding a.png (b"aaa"), and a store that has read it once (directly)."""
    seaweed.put_object(Bucket=bucket, Key="a.png", Body=b"aaa")
    store = _store(endpoint, root)
    assert store.read(f"s3://{bucket}/a.png") == b"aaa"
    return bucket, store


def _boto3_reads(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the store reads through boto3 from now on (the direct GETs' fallback)."""
    reads: list[str] = []
    real = store._get_s3

    def counting(client: Any, bucket: str, key: str, etag: str | None) -> Fetched:
        reads.append(key)
        return real(client, bucket, key, etag)

    monkeypatch.setattr(store, "_get_s3", counting)
    return reads


KEYS = ["a.png", "dir/sub/b c.png", "plus+sign.png", "ünï/ö.png", "tilde~x.png", "q?x=1#h.png", "p%20.png"]


def test_objects_are_read_directly_and_an_unchanged_one_is_not_sent_again(
    seaweed_endpoint: str, seaweed: Any, new_bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket("direct")
    for key in KEYS:
        seaweed.put_object(Bucket=bucket, Key=key, Body=key.encode() * 3)
    store = _store(seaweed_endpoint, tmp_path)
    boto3_reads = _boto3_reads(store, monkeypatch)
    for key in KEYS:
        first = store.fetch(f"s3://{bucket}/{key}")
        assert first.data == key.encode() * 3 and first.etag
        assert store.fetch(f"s3://{bucket}/{key}", etag=first.etag) == Fetched(None, first.etag)
    seaweed.put_object(Bucket=bucket, Key="a.png", Body=b"overwritten")
    changed = store.fetch(f"s3://{bucket}/a.png", etag=store.fetch(f"s3://{bucket}/tilde~x.png").etag)
    assert changed.data == b"overwritten"
    assert boto3_reads == []


def test_anything_but_a_plain_answer_is_boto3s_to_classify(
    seaweed_endpoint: str, seaweed: Any, new_bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket("fallback")
    seaweed.put_object(Bucket=bucket, Key="big.png", Body=b"x" * 2048)
    store = _store(seaweed_endpoint, tmp_path, max_bytes=1024)
    boto3_reads = _boto3_reads(store, monkeypatch)
    with pytest.raises(ImageNotFound, match="NoSuchKey"):
        store.read(f"s3://{bucket}/missing.png")
    with pytest.raises(ImageTooLarge, match="2048 bytes"):  # refused on the declared length, directly
        store.read(f"s3://{bucket}/big.png")
    assert boto3_reads == ["missing.png"]
    assert store._direct is not None and store._direct._urls[bucket] is not None  # still read directly


def test_a_bucket_whose_direct_gets_are_refused_is_read_through_boto3_from_then_on(
    seaweed_endpoint: str,
    seaweed: Any,
    new_bucket: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket, store = _read_once(seaweed_endpoint, seaweed, new_bucket("refused"), tmp_path)
    assert store._direct is not None
    monkeypatch.setattr(store._direct, "get", lambda *_: (400, None))  # e.g. a region the URL did not say
    with caplog.at_level(logging.WARNING, logger="workers.store"):
        for _ in range(REFUSALS_TO_FORGET - 1):  # a refusal or two (a credential rotation) is forgiven
            assert store.read(f"s3://{bucket}/a.png") == b"aaa"  # boto3 read it
            assert store._direct._urls[bucket] is not None
        assert not caplog.records
        assert store.read(f"s3://{bucket}/a.png") == b"aaa"
    assert store._direct._urls[bucket] is None
    assert [r.getMessage() for r in caplog.records] == [
        f"S3 bucket {bucket!r}: direct GETs were refused {REFUSALS_TO_FORGET} times where boto3 read the "
        "objects; reading it through boto3 from now on (slower)"
    ]


def test_a_kept_alive_connection_closed_meanwhile_is_replaced(
    seaweed_endpoint: str, seaweed: Any, new_bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, store = _read_once(seaweed_endpoint, seaweed, new_bucket("stale"), tmp_path)
    assert store._direct is not None
    target = store._direct._urls[bucket]
    assert target is not None
    origin = target[0]
    assert origin._idle
    for conn in origin._idle:  # as a restarted server leaves them
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
    boto3_reads = _boto3_reads(store, monkeypatch)
    assert store.read(f"s3://{bucket}/a.png") == b"aaa"
    assert boto3_reads == []


def _png(color: tuple[int, int, int]) -> bytes:
    from io import BytesIO

    out = BytesIO()
    Image.new("RGB", (16, 16), color).save(out, format="PNG")
    return out.getvalue()


def test_the_loader_asks_about_a_cached_picture_and_sees_an_overwritten_key(
    seaweed_endpoint: str, seaweed: Any, new_bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket("loader")
    seaweed.put_object(Bucket=bucket, Key="x.png", Body=_png((200, 10, 10)))
    store = _store(seaweed_endpoint, tmp_path)
    asked: list[str | None] = []
    real_fetch = store.fetch

    def fetch(uri: str, etag: str | None = None) -> Fetched:
        asked.append(etag)
        return real_fetch(uri, etag)

    monkeypatch.setattr(store, "fetch", fetch)
    decoded: list[str] = []
    real_normalize = imaging.normalize
    monkeypatch.setattr(
        imaging,
        "normalize",
        lambda data, uri, limits: decoded.append(uri) or real_normalize(data, uri, limits),
    )
    loader = ImageLoader(store, ImageLimits())
    uri = f"s3://{bucket}/x.png"
    first = loader.load(uri)
    again = loader.load(uri)
    assert again is first and asked[0] is None and asked[1] is not None  # the second read was conditional
    seaweed.put_object(Bucket=bucket, Key="x.png", Body=_png((10, 10, 200)))  # the key is overwritten
    changed = loader.load(uri)
    assert changed.sha256 != first.sha256 and changed.image.getpixel((0, 0)) == (10, 10, 200)
    assert decoded == [uri, uri] and len(asked) == 3
