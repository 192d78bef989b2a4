"""ImageStore: files confined to the root, S3 through boto3 (a real SeaweedFS), refusals and limits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from core.errors import (
    ForbiddenLocation,
    ImageNotFound,
    ImageTooLarge,
    ImageUnreadable,
    PermanentError,
    StoreUnavailable,
    TransientError,
)
from ops.stack import free_port, s3_client
from workers.store import ImageStore, StoreConfig, split_s3

PAYLOAD = b"\x89PNG-not-really-but-bytes" * 4


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "a.png").write_bytes(PAYLOAD)
    (r / "sub" / "b.png").write_bytes(b"bee")
    return r


@pytest.fixture()
def store(root: Path) -> ImageStore:
    return ImageStore(StoreConfig(image_root=root, max_bytes=1024))


# ----------------------------------------------------------------------------------- file reads


@pytest.mark.parametrize("uri", ["a.png", "file://a.png", "./a.png", "sub/../a.png", "file://sub/../a.png"])
def test_relative_locations_read_inside_root(store: ImageStore, uri: str) -> None:
    assert store.read(uri) == PAYLOAD


def test_nested_relative_file(store: ImageStore) -> None:
    assert store.read("file://sub/b.png") == b"bee"
    assert store.read("sub/b.png") == b"bee"


def test_absolute_paths_inside_root(store: ImageStore, root: Path) -> None:
    absolute = root / "sub" / "b.png"
    assert store.read(str(absolute)) == b"bee"
    assert store.read(f"file://{absolute}") == b"bee"


def test_root_given_through_a_symlink(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "root_link"
    link.symlink_to(root, target_is_directory=True)
    s = ImageStore(StoreConfig(image_root=link))
    assert s.root == root.resolve()
    assert s.read("a.png") == PAYLOAD
    assert s.read(str(link / "a.png")) == PAYLOAD  # absolute via the link resolves inside the root


def test_symlink_that_stays_inside_root_is_fine(store: ImageStore, root: Path) -> None:
    (root / "alias.png").symlink_to(root / "sub" / "b.png")
    assert store.read("alias.png") == b"bee"


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "uri",
    [
        "../secret.txt",
        "file://../secret.txt",
        "sub/../../secret.txt",
        "file://sub/../../secret.txt",
        "sub/../../root/../secret.txt",
    ],
)
def test_dotdot_escapes_are_refused(store: ImageStore, tmp_path: Path, uri: str) -> None:
    (tmp_path / "secret.txt").write_bytes(b"top secret")
    with pytest.raises(ForbiddenLocation):
        store.read(uri)


def test_dotdot_refused_even_when_target_missing(store: ImageStore) -> None:
    # Must be refused as forbidden, not reported as "not found" (no probing of the file system).
    with pytest.raises(ForbiddenLocation):
        store.read("../../../../no/such/file.png")


def test_absolute_paths_outside_root_are_refused(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    for uri in (str(outside), f"file://{outside}", "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(ForbiddenLocation):
            store.read(uri)


def test_sibling_folder_sharing_the_root_prefix_is_refused(store: ImageStore, tmp_path: Path) -> None:
    sibling = tmp_path / "root2"
    sibling.mkdir()
    (sibling / "x.png").write_bytes(b"x")
    with pytest.raises(ForbiddenLocation):
        store.read(str(sibling / "x.png"))
    with pytest.raises(ForbiddenLocation):
        store.read("../root2/x.png")


def test_symlinked_file_escaping_root_is_refused(store: ImageStore, root: Path, tmp_path: Path) -> None:
    target = tmp_path / "outside.png"
    target.write_bytes(b"outside")
    (root / "evil.png").symlink_to(target)
    with pytest.raises(ForbiddenLocation):
        store.read("evil.png")
    with pytest.raises(ForbiddenLocation):
        store.read("file://evil.png")
    with pytest.raises(ForbiddenLocation):
        store.read(str(root / "evil.png"))


def test_symlinked_folder_escaping_root_is_refused(store: ImageStore, root: Path, tmp_path: Path) -> None:
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "img.png").write_bytes(b"outside")
    (root / "linkdir").symlink_to(outside_dir, target_is_directory=True)
    with pytest.raises(ForbiddenLocation):
        store.read("linkdir/img.png")


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/a.png",
        "https://example.com/a.png",
        "ftp://example.com/a.png",
        "gopher://x/y",
        "HTTP://example.com/a.png",
        "S3://bucket/key",
        "FILE://a.png",
    ],
)
def test_other_schemes_are_refused(store: ImageStore, uri: str) -> None:
    with pytest.raises(ForbiddenLocation, match="scheme"):
        store.read(uri)


@pytest.mark.parametrize("uri", ["", "file://"])
def test_empty_locations_are_refused(store: ImageStore, uri: str) -> None:
    with pytest.raises(ForbiddenLocation):
        store.read(uri)


def test_refusals_are_permanent_errors() -> None:
    assert issubclass(ForbiddenLocation, PermanentError)
    assert issubclass(ImageNotFound, PermanentError)
    assert issubclass(ImageTooLarge, PermanentError)
    assert issubclass(StoreUnavailable, TransientError)
    assert ForbiddenLocation.code == "forbidden_location"
    assert ImageNotFound.code == "image_not_found"
    assert ImageTooLarge.code == "image_too_large"


# ----------------------------------------------------------------------------- missing, limits


def test_missing_file_is_not_found(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound):
        store.read("nope.png")
    with pytest.raises(ImageNotFound):
        store.read("file://sub/nope.png")


def test_directory_is_not_an_image(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound):
        store.read("sub")


def test_dangling_symlink_inside_root_is_not_found(store: ImageStore, root: Path) -> None:
    (root / "dangling.png").symlink_to(root / "gone.png")
    with pytest.raises(ImageNotFound):
        store.read("dangling.png")


def test_byte_limit(root: Path) -> None:
    (root / "exact.bin").write_bytes(b"x" * 100)
    (root / "over.bin").write_bytes(b"x" * 101)
    s = ImageStore(StoreConfig(image_root=root, max_bytes=100))
    assert s.read("exact.bin") == b"x" * 100
    with pytest.raises(ImageTooLarge, match="101"):
        s.read("over.bin")


def test_empty_file_reads_as_empty_bytes(store: ImageStore, root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    assert store.read("empty.png") == b""


def test_os_error_while_reading_is_transient(
    store: ImageStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("workers.store.os.open", boom)
    with pytest.raises(StoreUnavailable, match="Permission denied"):
        store.read("a.png")


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("a\x00.png", id="nul-byte"),
        pytest.param("file://a\x00.png", id="nul-byte-file-uri"),
        pytest.param("x" * 300, id="name-too-long"),
        pytest.param("file://" + "y" * 300 + ".png", id="name-too-long-file-uri"),
    ],
)
def test_hostile_paths_are_permanent_errors(store: ImageStore, uri: str) -> None:
    """User-supplied junk must be rejected as bad input, never leak OSError/ValueError to the worker."""
    with pytest.raises(PermanentError):
        store.read(uri)


def test_symlink_loop_is_a_permanent_error(store: ImageStore, root: Path) -> None:
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    with pytest.raises(PermanentError):
        store.read("loop1")


# ---------------------------------------------------------------------------------- write_file


def test_write_file_round_trip(store: ImageStore, root: Path) -> None:
    uri = store.write_file("new/deep/c.png", b"sea")
    assert uri == "file://new/deep/c.png"
    assert (root / "new" / "deep" / "c.png").read_bytes() == b"sea"
    assert store.read(uri) == b"sea"
    # Overwrites in place.
    assert store.write_file("new/deep/c.png", b"sea2") == uri
    assert store.read(uri) == b"sea2"


def test_write_file_accepts_file_uri(store: ImageStore) -> None:
    uri = store.write_file("file://w.png", b"w")
    assert uri == "file://w.png"
    assert store.read("w.png") == b"w"


def test_write_file_refuses_escapes(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ForbiddenLocation):
        store.write_file("../escaped.png", b"x")
    with pytest.raises(ForbiddenLocation):
        store.write_file(str(tmp_path / "abs.png"), b"x")
    assert not (tmp_path / "escaped.png").exists()
    assert not (tmp_path / "abs.png").exists()


def test_write_file_refuses_symlink_escape(store: ImageStore, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outdir"
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ForbiddenLocation):
        store.write_file("out/x.png", b"x")
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------------------------ s3


def test_split_s3() -> None:
    assert split_s3("s3://bucket/a/b/c.png") == ("bucket", "a/b/c.png")
    for bad in (
        "s3://",
        "s3://bucket",
        "s3://bucket/",
        "s3:///key",
        "s3://bucket/dir/",
        "s3://b/./k",
        "s3://b/k\x00",
    ):
        with pytest.raises(ForbiddenLocation):
            split_s3(bad)


@dataclass
class S3:
    """The session's SeaweedFS, with two fresh buckets: `imgs` (dir/a.png, big.png, empty.png) and
    `other` (a.png)."""

    endpoint: str
    client: Any
    imgs: str
    other: str


@pytest.fixture()
def s3(seaweed_endpoint: str, seaweed: Any, new_bucket: Any, monkeypatch: pytest.MonkeyPatch) -> S3:
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    imgs, other = new_bucket("imgs"), new_bucket("other")
    seaweed.put_object(Bucket=imgs, Key="dir/a.png", Body=PAYLOAD)
    seaweed.put_object(Bucket=imgs, Key="big.png", Body=b"x" * 2048)
    seaweed.put_object(Bucket=other, Key="a.png", Body=b"other")
    # A zero-byte PUT through a client leaves its pooled connection broken for the next PUT (the
    # server answers 200 without `100 Continue`; botocore then misreads the next response and
    # waits out its read timeout: boto/botocore#3755), so a throwaway client writes it.
    s3_client(seaweed_endpoint).put_object(Bucket=imgs, Key="empty.png", Body=b"")
    return S3(seaweed_endpoint, seaweed, imgs, other)


def test_s3_read_with_own_client(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(
        StoreConfig(
            image_root=tmp_path,
            max_bytes=1024,
            s3_endpoint_url=s3.endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
        )
    )
    assert s.read(f"s3://{s3.imgs}/dir/a.png") == PAYLOAD
    assert s.s3 is s.s3  # one client per store
    assert s.s3.meta.endpoint_url == s3.endpoint


def test_s3_read_with_injected_client(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path, max_bytes=1024), s3_client=s3.client)
    assert s.read(f"s3://{s3.imgs}/dir/a.png") == PAYLOAD
    assert s.read(f"s3://{s3.other}/a.png") == b"other"


def test_s3_missing_key_and_bucket_are_not_found(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=s3.client)
    with pytest.raises(ImageNotFound, match="NoSuchKey"):
        s.read(f"s3://{s3.imgs}/dir/missing.png")
    with pytest.raises(ImageNotFound, match="NoSuchKey"):
        s.read(f"s3://{s3.imgs}/dir")  # a "folder" of keys is not an object
    with pytest.raises(ImageNotFound, match="NoSuchKey"):
        s.read(f"s3://{s3.other}/dir/a.png")  # a key of another bucket
    with pytest.raises(ImageNotFound, match="NoSuchBucket"):
        s.read(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/a.png")


def test_s3_object_over_limit(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path, max_bytes=1024), s3_client=s3.client)
    with pytest.raises(ImageTooLarge, match="2048 bytes"):  # refused on the declared Content-Length
        s.read(f"s3://{s3.imgs}/big.png")
    exact = ImageStore(StoreConfig(image_root=tmp_path, max_bytes=2048), s3_client=s3.client)
    assert exact.read(f"s3://{s3.imgs}/big.png") == b"x" * 2048


def test_s3_empty_object_reads_as_empty_bytes(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=s3.client)
    assert s.read(f"s3://{s3.imgs}/empty.png") == b""


def test_s3_allowed_buckets(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path, allowed_buckets=(s3.imgs,)), s3_client=s3.client)
    assert s.read(f"s3://{s3.imgs}/dir/a.png") == PAYLOAD
    with pytest.raises(ForbiddenLocation, match=s3.other):
        s.read(f"s3://{s3.other}/a.png")


def test_s3_server_not_listening_is_transient(tmp_path: Path) -> None:
    config = StoreConfig(
        image_root=tmp_path,
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    with pytest.raises(StoreUnavailable, match="S3 unreachable"):
        ImageStore(config).read("s3://imgs/dir/a.png")


def test_s3_malformed_uri(tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=object())
    with pytest.raises(ForbiddenLocation):
        s.read("s3://bucket-only")


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False
        self.asked: int | None = None

    def read(self, n: int = -1) -> bytes:
        self.asked = n
        return self.data if n < 0 else self.data[:n]

    def close(self) -> None:
        self.closed = True


class _Client:
    """A stand-in S3 client (the dependency, not the store) that returns or raises what it is told."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def get_object(self, Bucket: str, Key: str) -> Any:  # noqa: N803 - boto3's names
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("NoSuchKey", ImageNotFound),
        ("404", ImageNotFound),
        ("AccessDenied", ForbiddenLocation),
        ("403", ForbiddenLocation),
        ("InvalidAccessKeyId", StoreUnavailable),  # credentials: the operator's to fix, retried
        ("SignatureDoesNotMatch", StoreUnavailable),
        ("SlowDown", StoreUnavailable),
        ("InternalError", StoreUnavailable),
    ],
)
def test_s3_client_errors_are_classified(tmp_path: Path, code: str, expected: type) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=_Client(_client_error(code)))
    with pytest.raises(expected):
        s.read("s3://b/k.png")


def test_s3_connection_error_is_transient(tmp_path: Path) -> None:
    err = EndpointConnectionError(endpoint_url="http://localhost:1")
    s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=_Client(err))
    with pytest.raises(StoreUnavailable):
        s.read("s3://b/k.png")


def test_s3_body_longer_than_declared_length_is_capped(tmp_path: Path) -> None:
    body = _Body(b"y" * 500)
    s = ImageStore(
        StoreConfig(image_root=tmp_path, max_bytes=100), s3_client=_Client({"ContentLength": 0, "Body": body})
    )
    with pytest.raises(ImageTooLarge):
        s.read("s3://b/k.png")
    assert body.asked == 101  # never reads more than one byte past the limit
    assert body.closed


def test_s3_declared_length_over_limit_closes_without_reading(tmp_path: Path) -> None:
    body = _Body(b"y" * 500)
    s = ImageStore(
        StoreConfig(image_root=tmp_path, max_bytes=100),
        s3_client=_Client({"ContentLength": 500, "Body": body}),
    )
    with pytest.raises(ImageTooLarge, match="500"):
        s.read("s3://b/k.png")
    assert body.asked is None
    assert body.closed


def test_s3_body_cut_short_is_transient_not_a_corrupt_image(tmp_path: Path) -> None:
    # a connection dropped mid-body: botocore hands back fewer bytes than declared without an error
    s = ImageStore(
        StoreConfig(image_root=tmp_path, max_bytes=1000),
        s3_client=_Client({"ContentLength": 500, "Body": _Body(b"y" * 200)}),
    )
    with pytest.raises(StoreUnavailable, match="cut short"):
        s.read("s3://b/k.png")


@pytest.mark.parametrize("own_client", [True, False])
def test_s3_locations_the_store_cannot_hold_are_refused_not_retried(
    s3: S3, tmp_path: Path, own_client: bool
) -> None:
    """A key with `..` segments (stores disagree: SeaweedFS answers InvalidRequest, AWS keeps it), a
    bucket name boto3 refuses, or a "folder" key: retrying the same location cannot help, so each is
    a permanent refusal."""
    if own_client:  # direct signed GETs first, boto3 for anything but a plain answer
        config = StoreConfig(
            image_root=tmp_path,
            s3_endpoint_url=s3.endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
        )
        s = ImageStore(config)
    else:
        s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=s3.client)
    with pytest.raises(ForbiddenLocation, match="'..' segments"):
        s.read(f"s3://{s3.imgs}/a/../dir/a.png")
    with pytest.raises(ForbiddenLocation, match="malformed S3 location"):
        s.read("s3://bad bucket/a.png")
    with pytest.raises(ForbiddenLocation, match="names a folder"):
        s.read(f"s3://{s3.imgs}/dir/")
    assert s.read(f"s3://{s3.imgs}/dir/a.png") == PAYLOAD  # and the store still reads


def test_s3_an_empty_image_is_refused_before_it_is_written(s3: S3, tmp_path: Path) -> None:
    s = ImageStore(StoreConfig(image_root=tmp_path), s3_client=s3.client)
    with pytest.raises(ImageUnreadable, match="empty image"):
        s.put(f"s3://{s3.imgs}/new.png", b"")
    with pytest.raises(ImageUnreadable, match="empty image"):
        s.put("file://new.png", b"")
    assert s.put(f"s3://{s3.imgs}/new.png", b"png") == f"s3://{s3.imgs}/new.png"
    assert s.read(f"s3://{s3.imgs}/new.png") == b"png"
