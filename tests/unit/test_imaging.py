"""normalize(): orientation, RGB, pixel budget, corrupt inputs and bombs; ImageLoader's sha256 cache."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workers.imaging as imaging
from core.errors import ImageNotFound, ImageTooLarge, ImageUnreadable, InvalidRequest
from workers.imaging import ImageLimits, ImageLoader, NormalizedImage, normalize
from workers.store import ImageStore, StoreConfig

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png_bomb(width: int, height: int) -> bytes:
    """A real, valid PNG (mode "1") of all-black rows: tiny on disk, huge once decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _quadrant_mean(img: Image.Image, corner: str, frac: float = 0.25) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    h, w = arr.shape[:2]
    dh, dw = max(1, int(h * frac)), max(1, int(w * frac))
    rows = slice(0, dh) if corner[0] == "t" else slice(h - dh, h)
    cols = slice(0, dw) if corner[1] == "l" else slice(w - dw, w)
    return arr[rows, cols].reshape(-1, 3).mean(axis=0)


def _is_close(colour: np.ndarray, target: tuple[int, int, int], tol: float = 40.0) -> bool:
    return bool(np.abs(colour - np.array(target)).max() <= tol)


def _marked_jpeg(orientation: int | None) -> bytes:
    """80 wide x 40 high, blue, with a red block in the top-left corner (as stored)."""
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(RED, (0, 0, 20, 10))
    if orientation is None:
        return _encode(img, "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(img, "JPEG", quality=95, exif=exif.tobytes())


# ----------------------------------------------------------------------------------- basics


def test_png_round_trip_and_facts() -> None:
    img = Image.new("RGB", (30, 20), (10, 200, 30))
    img.putpixel((3, 4), RED)
    data = _encode(img)
    out = normalize(data, "file://x.png", ImageLimits())
    assert isinstance(out, NormalizedImage)
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    assert out.uri == "file://x.png"
    assert (out.width, out.height) == (30, 20)
    assert out.format == "PNG"
    assert out.size_bytes == len(data)
    assert out.image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out.image), np.asarray(img))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "1"])
def test_other_modes_become_rgb(mode: str) -> None:
    img = Image.new("RGB", (16, 16), (200, 200, 200)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = normalize(_encode(img, fmt), "u", ImageLimits())
    assert out.image.mode == "RGB"
    assert out.image.size == (16, 16)


def test_grey_png_keeps_its_grey_level() -> None:
    out = normalize(_encode(Image.new("L", (8, 8), 77)), "u", ImageLimits())
    assert np.asarray(out.image)[0, 0].tolist() == [77, 77, 77]


# ------------------------------------------------------------------------------ orientation


def test_jpeg_without_orientation_is_untouched() -> None:
    out = normalize(_marked_jpeg(None), "u", ImageLimits())
    assert out.image.size == (80, 40)
    assert _is_close(_quadrant_mean(out.image, "tl", 0.1), RED)


def test_exif_orientation_6_rotates_clockwise() -> None:
    out = normalize(_marked_jpeg(6), "u", ImageLimits())
    assert out.format == "JPEG"
    assert out.image.size == (40, 80)  # width and height swap
    # Orientation 6 = rotate 90 degrees clockwise for display: top-left moves to top-right.
    assert _is_close(_quadrant_mean(out.image, "tr", 0.1), RED)
    for corner in ("tl", "bl", "br"):
        assert _is_close(_quadrant_mean(out.image, corner, 0.1), BLUE), corner


def test_exif_orientation_8_rotates_counter_clockwise() -> None:
    out = normalize(_marked_jpeg(8), "u", ImageLimits())
    assert out.image.size == (40, 80)
    # Orientation 8 = rotate 90 degrees counter-clockwise: top-left moves to bottom-left.
    assert _is_close(_quadrant_mean(out.image, "bl", 0.1), RED)
    for corner in ("tl", "tr", "br"):
        assert _is_close(_quadrant_mean(out.image, corner, 0.1), BLUE), corner


def test_exif_orientation_3_rotates_half_turn() -> None:
    out = normalize(_marked_jpeg(3), "u", ImageLimits())
    assert out.image.size == (80, 40)
    assert _is_close(_quadrant_mean(out.image, "br", 0.1), RED)
    assert _is_close(_quadrant_mean(out.image, "tl", 0.1), BLUE)


def test_orientation_is_applied_before_the_budget() -> None:
    out = normalize(_marked_jpeg(6), "u", ImageLimits(pixel_budget=20 * 40 // 1))
    w, h = out.image.size
    assert h > w  # still portrait after resizing
    assert w * h <= 800


# ------------------------------------------------------------------------------ transparency


def test_rgba_is_flattened_on_white() -> None:
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    img.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black
    out = normalize(_encode(img), "u", ImageLimits())
    px = np.asarray(out.image)
    assert out.image.mode == "RGB"
    assert px[0, 0].tolist() == [255, 255, 255]
    assert px[0, 1].tolist() == [255, 0, 0]
    assert all(120 <= v <= 135 for v in px[0, 2].tolist())


def test_la_is_flattened_on_white() -> None:
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))
    img.putpixel((1, 0), (0, 255))
    px = np.asarray(normalize(_encode(img), "u", ImageLimits()).image)
    assert px[0, 0].tolist() == [255, 255, 255]
    assert px[0, 1].tolist() == [0, 0, 0]


def test_palette_with_transparency_is_flattened_on_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    data = _encode(img, transparency=0)
    px = np.asarray(normalize(data, "u", ImageLimits()).image)
    assert px[0, 0].tolist() == [255, 255, 255]
    assert px[0, 1].tolist() == [0, 255, 0]


# ------------------------------------------------------------------------------- pixel budget


def test_resize_to_budget_keeps_aspect_ratio() -> None:
    data = _encode(Image.new("RGB", (400, 100), (1, 2, 3)))
    out = normalize(data, "u", ImageLimits(pixel_budget=100 * 100))
    assert (out.width, out.height) == (400, 100)  # facts about the source
    w, h = out.image.size
    assert w * h <= 100 * 100
    assert (w, h) == (200, 50)
    assert w / h == pytest.approx(4.0, rel=0.02)


@pytest.mark.parametrize(
    ("size", "budget"), [((1000, 37), 5000), ((37, 1000), 5000), ((640, 480), 448 * 448)]
)
def test_budget_respected_for_odd_shapes(size: tuple[int, int], budget: int) -> None:
    out = normalize(_encode(Image.new("RGB", size)), "u", ImageLimits(pixel_budget=budget))
    w, h = out.image.size
    assert w * h <= budget
    assert w * h >= 0.9 * budget  # not shrunk far more than needed
    assert (w / h) == pytest.approx(size[0] / size[1], rel=0.05)


def test_image_within_budget_is_not_resized() -> None:
    out = normalize(_encode(Image.new("RGB", (100, 100))), "u", ImageLimits(pixel_budget=100 * 100))
    assert out.image.size == (100, 100)


def test_extreme_aspect_never_collapses_to_zero() -> None:
    out = normalize(_encode(Image.new("RGB", (2000, 1))), "u", ImageLimits(pixel_budget=100))
    w, h = out.image.size
    assert h >= 1 and w >= 1
    assert w * h <= 100


# ----------------------------------------------------------------------------- bad input


def test_empty_bytes_unreadable() -> None:
    with pytest.raises(ImageUnreadable, match="empty"):
        normalize(b"", "u", ImageLimits())


def test_text_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ImageUnreadable):
        normalize(b"hello, I am a text file, not a picture\n" * 10, "file://notes.txt", ImageLimits())


def test_random_bytes_unreadable() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ImageUnreadable):
        normalize(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "u", ImageLimits())


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_truncated_png_unreadable(keep: float) -> None:
    rng = np.random.default_rng(1)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    data = _encode(noisy)
    with pytest.raises(ImageUnreadable):
        normalize(data[: int(len(data) * keep)], "u", ImageLimits())


def test_png_cut_inside_the_header_unreadable() -> None:
    data = _encode(Image.new("RGB", (8, 8)))
    for cut in (4, 8, 12, 20, 30):
        with pytest.raises(ImageUnreadable):
            normalize(data[:cut], "u", ImageLimits())


def test_truncated_jpeg_unreadable() -> None:
    rng = np.random.default_rng(2)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    data = _encode(noisy, "JPEG", quality=90)
    with pytest.raises(ImageUnreadable):
        normalize(data[: len(data) // 2], "u", ImageLimits())


def test_corrupt_png_data_unreadable() -> None:
    rng = np.random.default_rng(3)
    noisy = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")
    data = bytearray(_encode(noisy))
    idat = data.index(b"IDAT") + 4
    data[idat : idat + 64] = b"\xff" * 64  # garbage in the zlib stream
    with pytest.raises(ImageUnreadable):
        normalize(bytes(data), "u", ImageLimits())


# ----------------------------------------------------------------------------------- bombs


def test_pixel_limit_checked_on_header() -> None:
    data = _encode(Image.new("L", (100, 100)))
    with pytest.raises(ImageTooLarge, match="10000"):
        normalize(data, "u", ImageLimits(max_pixels=9_999))
    assert normalize(data, "u", ImageLimits(max_pixels=10_000)).image.size == (100, 100)


def test_declared_size_over_max_pixels_is_too_large() -> None:
    # 8000 x 8000 = 64M pixels: over the default 50M limit, under Pillow's own bomb threshold.
    bomb = _png_bomb(8000, 8000)
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge):
        normalize(bomb, "u", ImageLimits())


def test_30000_square_png_bomb_is_too_large() -> None:
    """A 30000x30000 PNG of ~110 KB must be refused as too large, cheaply, before decoding."""
    bomb = _png_bomb(30_000, 30_000)
    assert len(bomb) < 500_000
    assert bomb[16:24] == struct.pack(">II", 30_000, 30_000)
    with pytest.raises(ImageTooLarge):
        normalize(bomb, "file://bomb.png", ImageLimits())


def test_bomb_with_generous_limit_is_still_too_large() -> None:
    # Even when the configured limit would allow it, Pillow's bomb guard must map to ImageTooLarge.
    bomb = _png_bomb(30_000, 30_000)
    with pytest.raises(ImageTooLarge):
        normalize(bomb, "u", ImageLimits(max_pixels=10**10))


# ---------------------------------------------------------------------------------- loader


@pytest.fixture()
def loader_env(tmp_path: Path) -> tuple[ImageStore, Path]:
    root = tmp_path / "imgs"
    root.mkdir()
    return ImageStore(StoreConfig(image_root=root)), root


def _count_normalize(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = imaging.normalize

    def counting(data: bytes, uri: str, limits: ImageLimits) -> NormalizedImage:
        calls.append(uri)
        return real(data, uri, limits)

    monkeypatch.setattr(imaging, "normalize", counting)
    return calls


def test_loader_caches_by_content(
    loader_env: tuple[ImageStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, root = loader_env
    data = _encode(Image.new("RGB", (20, 10), (9, 8, 7)))
    (root / "one.png").write_bytes(data)
    (root / "two.png").write_bytes(data)
    calls = _count_normalize(monkeypatch)
    loader = ImageLoader(store, ImageLimits())
    first = loader.load("file://one.png")
    second = loader.load("file://two.png")
    again = loader.load("file://one.png")
    assert calls == ["file://one.png"]
    assert first.uri == "file://one.png"
    assert second.uri == "file://two.png"  # the caller's URI, not the cached one
    assert again.uri == "file://one.png"
    assert second.image is first.image
    assert second.sha256 == first.sha256 == hashlib.sha256(data).hexdigest()
    assert (second.width, second.height, second.format, second.size_bytes) == (
        first.width,
        first.height,
        first.format,
        first.size_bytes,
    )


def test_loader_distinct_content_normalized_separately(
    loader_env: tuple[ImageStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, root = loader_env
    (root / "a.png").write_bytes(_encode(Image.new("RGB", (8, 8), RED)))
    (root / "b.png").write_bytes(_encode(Image.new("RGB", (8, 8), BLUE)))
    calls = _count_normalize(monkeypatch)
    loader = ImageLoader(store, ImageLimits())
    a, b = loader.load("a.png"), loader.load("b.png")
    assert calls == ["a.png", "b.png"]
    assert a.sha256 != b.sha256
    assert np.asarray(a.image)[0, 0].tolist() == list(RED)
    assert np.asarray(b.image)[0, 0].tolist() == list(BLUE)


def test_loader_sees_changed_file_content(
    loader_env: tuple[ImageStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, root = loader_env
    loader = ImageLoader(store, ImageLimits())
    (root / "x.png").write_bytes(_encode(Image.new("RGB", (8, 8), RED)))
    assert np.asarray(loader.load("x.png").image)[0, 0].tolist() == list(RED)
    (root / "x.png").write_bytes(_encode(Image.new("RGB", (8, 8), BLUE)))
    assert np.asarray(loader.load("x.png").image)[0, 0].tolist() == list(BLUE)


def test_loader_lru_eviction(loader_env: tuple[ImageStore, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    store, root = loader_env
    for name, colour in (("a", RED), ("b", BLUE), ("c", (0, 255, 0))):
        (root / f"{name}.png").write_bytes(_encode(Image.new("RGB", (8, 8), colour)))
    calls = _count_normalize(monkeypatch)
    loader = ImageLoader(store, ImageLimits(), cache_size=2)
    loader.load("a.png")
    loader.load("b.png")
    loader.load("a.png")  # hit: a becomes most recent
    loader.load("c.png")  # evicts b, the least recently used
    assert calls == ["a.png", "b.png", "c.png"]
    loader.load("a.png")
    assert calls == ["a.png", "b.png", "c.png"]
    loader.load("b.png")
    assert calls == ["a.png", "b.png", "c.png", "b.png"]


def test_loader_cache_is_bounded_by_decoded_bytes(
    loader_env: tuple[ImageStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, root = loader_env
    for name, colour in (("a", RED), ("b", BLUE), ("c", (0, 255, 0))):
        (root / f"{name}.png").write_bytes(_encode(Image.new("RGB", (10, 10), colour)))
    calls = _count_normalize(monkeypatch)
    loader = ImageLoader(store, ImageLimits(), cache_bytes=2 * 10 * 10 * 4)  # room for two pictures
    for uri in ("a.png", "b.png", "c.png", "b.png", "c.png"):
        loader.load(uri)
    assert calls == ["a.png", "b.png", "c.png"]
    loader.load("a.png")  # evicted by c when the budget was hit
    assert calls == ["a.png", "b.png", "c.png", "a.png"]
    assert ImageLoader(store, ImageLimits(), cache_bytes=0).load("a.png").sha256  # no cache still loads


class _CountingStore(ImageStore):
    def __init__(self, root: Path) -> None:
        super().__init__(StoreConfig(image_root=root))
        self.reads: list[str] = []

    def read(self, uri: str) -> bytes:
        self.reads.append(uri)
        return super().read(uri)


def test_loader_reads_the_store_every_time_by_default(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path)
    (tmp_path / "x.png").write_bytes(_encode(Image.new("RGB", (8, 8), RED)))
    loader = ImageLoader(store, ImageLimits())
    loader.load("x.png")
    loader.load("x.png")
    assert store.reads == ["x.png", "x.png"]


def test_loader_trusts_a_recent_read_within_the_uri_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _CountingStore(tmp_path)
    (tmp_path / "x.png").write_bytes(_encode(Image.new("RGB", (8, 8), RED)))
    (tmp_path / "y.png").write_bytes(_encode(Image.new("RGB", (8, 8), RED)))  # same bytes, other URI
    clock = [100.0]
    monkeypatch.setattr(imaging.time, "monotonic", lambda: clock[0])
    loader = ImageLoader(store, ImageLimits(), uri_ttl_s=60)
    first = loader.load("x.png")
    (tmp_path / "x.png").write_bytes(_encode(Image.new("RGB", (8, 8), BLUE)))  # overwritten key
    clock[0] = 159.0
    again = loader.load("x.png")
    assert store.reads == ["x.png"]  # within the TTL: not read again, the old picture (documented)
    assert again.sha256 == first.sha256 and again.uri == "x.png"
    other = loader.load("y.png")  # a URI never read is always read, even with identical content
    assert store.reads == ["x.png", "y.png"] and other.uri == "y.png"
    clock[0] = 160.0
    fresh = loader.load("x.png")  # TTL over: read again, the new content is seen
    assert store.reads == ["x.png", "y.png", "x.png"]
    assert np.asarray(fresh.image)[0, 0].tolist() == list(BLUE)


def test_loader_uri_ttl_never_serves_an_evicted_picture(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path)
    for name, colour in (("a", RED), ("b", BLUE)):
        (tmp_path / f"{name}.png").write_bytes(_encode(Image.new("RGB", (8, 8), colour)))
    loader = ImageLoader(store, ImageLimits(), cache_size=1, uri_ttl_s=3600)
    loader.load("a.png")
    loader.load("b.png")  # evicts a's picture
    assert np.asarray(loader.load("a.png").image)[0, 0].tolist() == list(RED)
    assert store.reads == ["a.png", "b.png", "a.png"]


def test_loader_errors(loader_env: tuple[ImageStore, Path]) -> None:
    store, root = loader_env
    loader = ImageLoader(store, ImageLimits())
    for uri in ("", "   "):
        with pytest.raises(InvalidRequest):
            loader.load(uri)
    with pytest.raises(ImageNotFound):
        loader.load("missing.png")
    (root / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageUnreadable):
        loader.load("bad.png")
    # A failure is not cached as a success.
    with pytest.raises(ImageUnreadable):
        loader.load("bad.png")


def test_loader_applies_its_limits(loader_env: tuple[ImageStore, Path]) -> None:
    store, root = loader_env
    (root / "big.png").write_bytes(_encode(Image.new("RGB", (200, 200))))
    out = ImageLoader(store, ImageLimits(pixel_budget=50 * 50)).load("big.png")
    assert out.image.size == (50, 50)
    with pytest.raises(ImageTooLarge):
        ImageLoader(store, ImageLimits(max_pixels=100)).load("big.png")
