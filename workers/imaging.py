"""Image normalization, done once per content and cached by its sha256.

Every backend sees the same normalized picture: EXIF orientation applied, RGB (transparency flattened
on white), at most `pixel_budget` pixels. Limits are checked on the header before any pixel is
decoded, so a 30000x30000 "bomb" costs a few bytes of reading, not gigabytes of memory.

Pictures inside the limits can still be large (a 143 KB PNG may declare 7000x7000 = 49 MP, ~200 MB
decoded), so decoding is also gated per process: at most `decode_budget` pixels are decoded at once
(`DecodeGate`; one picture over the budget decodes alone), and a big picture is shrunk by an
integer factor straight after decoding, before any conversion copies it. A worker at `-c 64` fed
only such pictures therefore holds at most `decode_budget` x 8 bytes (measured: 5-7), not 64 x 200 MB.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from core.errors import ImageTooLarge, ImageUnreadable, InvalidRequest
from workers.decoded import DecodedFolder, DecodedPicture
from workers.store import ImageStore

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Formats decoded at all: no EPS/PS (Ghostscript), PDF or exotic decoders on untrusted bytes."""


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 50_000_000
    pixel_budget: int = 448 * 448
    decode_budget: int = 100_000_000  # pixels decoded at once in one process (DecodeGate)


class DecodeGate:
    """A process-wide cap on the pixels being decoded at once (threads wait their turn).

    A picture larger than the whole budget still decodes, alone, so nothing within `max_pixels` is
    ever refused for its size here; it only waits.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = 0

    @contextlib.contextmanager
    def hold(self, pixels: int, budget: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._held == 0 or self._held + pixels <= budget)
            self._held += pixels
        try:
            yield
        finally:
            with self._cond:
                self._held -= pixels
                self._cond.notify_all()

    @property
    def held(self) -> int:
        return self._held


GATE = DecodeGate()
"""The one gate of this process: workers' loaders, the API's viewer and uploads all pass it."""


def _keep_freed_memory_returnable() -> None:
    """glibc raises its mmap threshold after big frees, after which freed pixel buffers stay in the
    heap instead of going back to the system, and gives each thread a heap of its own; pinning the
    threshold and capping the heaps keeps RSS tracking what is in use at `-c 64`."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD: 1 MiB, fixed
        libc.mallopt(-8, 4)  # M_ARENA_MAX: 64 threads would otherwise each keep a heap of their own
    except (OSError, AttributeError):
        pass


_keep_freed_memory_returnable()


@dataclass(frozen=True, eq=False)
class NormalizedImage:
    """A decoded, oriented, resized RGB picture and the facts about its source bytes."""

    sha256: str
    uri: str
    width: int  # of the source as stored (before EXIF rotation and resizing)
    height: int
    format: str
    size_bytes: int
    image: Image.Image


def normalize(data: bytes, uri: str, limits: ImageLimits) -> NormalizedImage:
    """Decode and normalize image bytes, raising a permanent error for anything unusable."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise ImageUnreadable(f"{uri!r} is empty (0 bytes)")
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageUnreadable(
            f"{uri!r} is not an image in a known format (accepted: {', '.join(FORMATS)})"
        ) from exc
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its pixel limit
        raise ImageTooLarge(f"{uri!r} is a likely decompression bomb: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageUnreadable(f"{uri!r} has an unreadable image header: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageUnreadable(f"{uri!r} declares an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"{uri!r} declares {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}"
        )
    fmt = img.format or "unknown"
    try:
        with GATE.hold(width * height, limits.decode_budget):
            img = _decode_small(img, limits.pixel_budget)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{uri!r} looks like a decompression bomb: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageUnreadable(f"{uri!r} has corrupt image data: {exc}") from exc
    img = _fit_budget(img, limits.pixel_budget)
    return NormalizedImage(
        sha256=digest, uri=uri, width=width, height=height, format=fmt, size_bytes=len(data), image=img
    )


def _decode_small(img: Image.Image, budget: int) -> Image.Image:
    """Decode, orient and convert to RGB, shrinking a big picture by an integer factor first (JPEG:
    in the decoder itself) so that no full-size copy is made after the one decode."""
    width, height = img.size
    factor = max(1, math.isqrt(width * height // max(1, budget)))
    if img.format == "JPEG" and factor > 1:
        img.draft("RGB", (max(1, width // factor), max(1, height // factor)))
    orientation = img.getexif().get(0x0112, 1)
    img.load()
    factor = max(1, math.isqrt(img.width * img.height // max(1, budget)))
    if factor > 1:
        if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
            img = img.convert("RGBA" if img.mode == "P" and "transparency" in img.info else "RGB")
        img = _reduce(img, factor)
    img = _to_rgb(img)
    method = _TRANSPOSE.get(orientation)
    return img.transpose(method) if method is not None else img


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """`Image.reduce`, except that pictures with alpha are reduced one band at a time: Pillow reduces
    them through a premultiplied full-size copy, which would double the memory of a huge decode."""
    if img.mode not in ("LA", "RGBA"):
        return img.reduce(factor)
    alpha = img.getchannel("A").reduce(factor)
    bands = [img.getchannel(b).reduce(factor) for b in img.getbands() if b != "A"]
    small = Image.merge(img.mode[:-1], bands)
    canvas = Image.new(small.mode, small.size, 255)
    canvas.paste(small, mask=alpha)  # flattened on white, as `_to_rgb` does
    return canvas


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that shows the picture upright (what ImageOps.exif_transpose does)."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _fit_budget(img: Image.Image, budget: int) -> Image.Image:
    w, h = img.size
    if w * h <= budget:
        return img
    scale = math.sqrt(budget / (w * h))
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    # a side clamped up to 1 px must shrink the other, or very thin images overshoot the budget
    nw, nh = min(nw, max(1, budget // nh)), min(nh, max(1, budget // nw))
    return img.resize((nw, nh), Image.Resampling.BICUBIC)


class ImageLoader:
    """Fetch + normalize with an LRU cache keyed by content hash (thread-safe, per process).

    The cache is bounded by entries and by decoded bytes (a 448x448 RGB picture is ~800 KB), so a
    worker can hold every image of a night's batch without growing past `cache_bytes`. Every load
    asks the store, since keys may be overwritten; an S3 object whose picture is cached is asked
    for conditionally (its ETag), so an unchanged one costs a 304 with no body to transfer or hash,
    and a changed one is read and judged anew. With `uri_ttl_s` > 0 a URI read less than that many
    seconds ago is answered from the cache without asking the store at all: safe where keys are
    written once (one key per generated image), and off by default because an overwritten key would
    be judged from its old content until the TTL ends. The ledger keeps the sha256 of what was
    judged either way.

    With `shared` (a `DecodedFolder`), a picture missing here is looked for in the host's folder of
    normalized pictures before it is decoded, and kept there once decoded, so a host's N worker
    processes decode each picture once between them instead of N times.
    """

    def __init__(
        self,
        store: ImageStore,
        limits: ImageLimits,
        cache_size: int = 100_000,
        cache_bytes: int = 1024 * 1024 * 1024,
        uri_ttl_s: float = 0.0,
        shared: DecodedFolder | None = None,
    ) -> None:
        self.store = store
        self.shared = shared
        self.limits = limits
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.uri_ttl_s = uri_ttl_s
        self._cache: OrderedDict[str, NormalizedImage] = OrderedDict()
        self._held = 0  # decoded bytes in the cache
        self._uris: dict[str, tuple[str, float]] = {}  # uri -> (sha256, monotonic time of the read)
        self._etags: dict[str, tuple[str, str]] = {}  # uri -> (ETag, sha256) of its last S3 read
        self._lock = threading.Lock()

    def load(self, uri: str) -> NormalizedImage:
        if not uri or not uri.strip():
            raise InvalidRequest("image URI is empty")
        if self.uri_ttl_s > 0:
            hit = self._fresh(uri)
            if hit is not None:
                return hit
        read_at = time.monotonic()
        known = self._etag_of(uri)
        fetched = self.store.fetch(uri, etag=known[0] if known else None)
        if fetched.data is None:  # unchanged since the read that cached it
            hit = self._cached(known[1], uri, read_at) if known else None
            if hit is not None:
                return hit
            fetched = self.store.fetch(uri)  # evicted meanwhile: read it whole
        data = fetched.data
        assert data is not None  # an unconditional read has the bytes
        digest = hashlib.sha256(data).hexdigest()
        hit = self._cached(digest, uri, read_at, fetched.etag)
        if hit is not None:
            return hit
        image = self._normalize(data, digest, uri)
        with self._lock:
            if digest not in self._cache:
                self._cache[digest] = image
                self._held += _decoded_bytes(image)
            self._remember(uri, digest, read_at, fetched.etag)
            while self._cache and (len(self._cache) > self.cache_size or self._held > self.cache_bytes):
                _, old = self._cache.popitem(last=False)
                self._held -= _decoded_bytes(old)
        return image

    def _normalize(self, data: bytes, digest: str, uri: str) -> NormalizedImage:
        """`normalize`, or its result as another process of this host left it in `shared`."""
        if self.shared is None:
            return normalize(data, uri, self.limits)
        kept = self.shared.get(digest)
        if (
            kept is not None
            and kept.size_bytes == len(data)
            and kept.width * kept.height <= self.limits.max_pixels
        ):
            return NormalizedImage(
                sha256=digest,
                uri=uri,
                width=kept.width,
                height=kept.height,
                format=kept.format,
                size_bytes=kept.size_bytes,
                image=kept.image,
            )
        image = normalize(data, uri, self.limits)
        self.shared.put(
            digest,
            DecodedPicture(
                width=image.width,
                height=image.height,
                format=image.format,
                size_bytes=image.size_bytes,
                image=image.image,
            ),
        )
        return image

    def _etag_of(self, uri: str) -> tuple[str, str] | None:
        """(ETag, sha256) of the last read of `uri` if its picture is still cached."""
        with self._lock:
            known = self._etags.get(uri)
            return known if known is not None and known[1] in self._cache else None

    def _cached(
        self, digest: str, uri: str, read_at: float, etag: str | None = None
    ) -> NormalizedImage | None:
        """The cached picture of these bytes, named `uri`, with the read remembered; None if absent."""
        with self._lock:
            hit = self._cache.get(digest)
            if hit is None:
                return None
            self._cache.move_to_end(digest)
            self._remember(uri, digest, read_at, etag)
        return hit if hit.uri == uri else _with_uri(hit, uri)

    def _fresh(self, uri: str) -> NormalizedImage | None:
        """The cached picture of `uri` if it was read within the TTL (and is still cached)."""
        with self._lock:
            known = self._uris.get(uri)
            if known is None or time.monotonic() - known[1] >= self.uri_ttl_s:
                return None
            hit = self._cache.get(known[0])
            if hit is None:
                return None
            self._cache.move_to_end(known[0])
        return hit if hit.uri == uri else _with_uri(hit, uri)

    def _remember(
        self, uri: str, digest: str, read_at: float, etag: str | None = None
    ) -> None:  # under self._lock
        if etag is not None:  # what the next read of `uri` asks the store about
            if len(self._etags) >= 4 * max(len(self._cache), 256):  # bounded by what the cache holds
                self._etags.clear()
            self._etags[uri] = (etag, digest)
        if self.uri_ttl_s <= 0:
            return
        known = self._uris.get(uri)
        if known is not None and known[1] > read_at:  # a later read of this URI already finished
            return
        if len(self._uris) >= 4 * max(len(self._cache), 256):  # bounded by what the cache holds
            self._uris.clear()
        self._uris[uri] = (digest, read_at)


def _decoded_bytes(img: NormalizedImage) -> int:
    """Memory of a decoded picture: Pillow keeps RGB pixels in 4 bytes (1 for L/P/1 modes)."""
    per_pixel = 1 if img.image.mode in ("1", "L", "P") else 4
    return img.image.width * img.image.height * per_pixel


def _with_uri(img: NormalizedImage, uri: str) -> NormalizedImage:
    return NormalizedImage(
        sha256=img.sha256,
        uri=uri,
        width=img.width,
        height=img.height,
        format=img.format,
        size_bytes=img.size_bytes,
        image=img.image,
    )
