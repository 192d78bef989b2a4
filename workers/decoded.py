"""Normalized pictures shared by the worker processes of one host, in a bounded folder.

Each process keeps its own in-memory cache (`ImageLoader`), so without this a host running N
prefork processes decodes and resizes every picture N times; at 448x448 that is ~8-14 ms of CPU
each (most of it the BICUBIC resize), against ~0.6 ms to read the result back from here.

A file holds one picture, named by the sha256 of its source bytes and the normalization it went
through (pixel budget, format version), so a change of `PIGREWARD_PIXEL_BUDGET` or of the code never
reads an old result. Files are written to a temporary name and renamed, so a reader sees a whole
file or none; a file whose length or checksum is wrong is deleted and the picture decoded again.
Only pictures that normalized cleanly are kept; refusals are always decided afresh.

The folder is bounded: each process counts what it writes and, past the bound or every
`RECOUNT_EVERY` writes, counts the folder and deletes the least recently used files down to 90%.
Between counts it can exceed the bound by what the host's other processes wrote meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever normalization or this file layout changes: old files are then never read."""

MAGIC = b"PIGDEC\x00"
RECOUNT_EVERY = 256
TOUCH_AFTER_S = 60.0
"""A hit refreshes the file's mtime (its place in LRU order) at most this often."""
STALE_TEMP_S = 3600.0


@dataclass(frozen=True)
class DecodedPicture:
    """What `ImageLoader` needs to rebuild a `NormalizedImage` without decoding."""

    width: int  # of the source, as `NormalizedImage` records it
    height: int
    format: str
    size_bytes: int
    image: Image.Image


class DecodedFolder:
    """A host-wide, size-bounded folder of normalized pictures (thread- and process-safe)."""

    def __init__(self, root: Path, max_bytes: int, pixel_budget: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.pixel_budget = pixel_budget
        self._lock = threading.Lock()
        self._counted: int | None = None  # bytes in the folder at the last count, plus own writes since
        self._writes = 0
        self._warned = False

    def _path(self, sha256: str) -> Path:
        return self.root / f"{sha256}-{self.pixel_budget}-v{FORMAT_VERSION}.rgb"

    def get(self, sha256: str) -> DecodedPicture | None:
        """The stored picture of these source bytes, or None (absent, unreadable or damaged)."""
        path = self._path(sha256)
        try:
            with open(path, "rb") as f:
                blob = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except OSError:
            return None
        picture = _unpack(blob)
        if picture is None:
            log.warning("decoded-picture cache: %s is damaged; deleted, the picture is decoded again", path)
            _remove(path)
            return None
        if time.time() - mtime > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(path)
        return picture

    def put(self, sha256: str, picture: DecodedPicture) -> None:
        """Keep a picture for the host's other processes; a failure to write only costs a decode."""
        if picture.image.mode != "RGB":  # normalization always yields RGB; anything else is not kept
            return
        blob = _pack(picture)
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(tmp, self._path(sha256))
            except BaseException:
                _remove(Path(tmp))
                raise
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "decoded-picture cache: cannot write under %s (%s); each process decodes on its own",
                    self.root,
                    exc,
                )
            return
        with self._lock:
            self._writes += 1
            if self._counted is not None:
                self._counted += len(blob)
            due = self._counted is None or self._counted > self.max_bytes or self._writes % RECOUNT_EVERY == 0
        if due:
            self.trim()

    def trim(self) -> int:
        """Count the folder; if over the bound, delete the least recently used files down to 90%.

        Returns the bytes held afterwards."""
        entries: list[tuple[float, int, Path]] = []
        now = time.time()
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.name.startswith(".tmp-"):
                        if now - st.st_mtime > STALE_TEMP_S:  # left by a process that died mid-write
                            _remove(Path(entry.path))
                        continue
                    entries.append((st.st_mtime, st.st_size, Path(entry.path)))
        except OSError:
            return 0
        held = sum(size for _, size, _ in entries)
        if held > self.max_bytes:
            entries.sort()
            target = int(self.max_bytes * 0.9)
            for _, size, path in entries:
                if held <= target:
                    break
                _remove(path)
                held -= size
        with self._lock:
            self._counted = held
        return held


def _pack(picture: DecodedPicture) -> bytes:
    img = picture.image
    raw = img.tobytes()
    header = json.dumps(
        {
            "width": picture.width,
            "height": picture.height,
            "format": picture.format,
            "size_bytes": picture.size_bytes,
            "mode": img.mode,
            "size": list(img.size),
        }
    ).encode()
    return MAGIC + struct.pack("<II", len(header), zlib.crc32(raw)) + header + raw


def _unpack(blob: bytes) -> DecodedPicture | None:
    fixed = len(MAGIC) + 8
    if len(blob) < fixed or not blob.startswith(MAGIC):
        return None
    header_len, crc = struct.unpack_from("<II", blob, len(MAGIC))
    try:
        meta = json.loads(blob[fixed : fixed + header_len])
        raw = memoryview(blob)[fixed + header_len :]  # no copy of the pixels
        mode, size = str(meta["mode"]), (int(meta["size"][0]), int(meta["size"][1]))
        if mode != "RGB" or len(raw) != size[0] * size[1] * 3 or zlib.crc32(raw) != crc:
            return None
        return DecodedPicture(
            width=int(meta["width"]),
            height=int(meta["height"]),
            format=str(meta["format"]),
            size_bytes=int(meta["size_bytes"]),
            image=Image.frombytes(mode, size, raw),
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
