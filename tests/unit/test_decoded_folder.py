"""The host-wide folder of normalized pictures: shared between processes, exact, bounded, never trusted blindly."""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workers.imaging as imaging
from core.errors import ImageTooLarge
from core.settings import Settings
from tasks.config import image_loader
from tests.unit.test_imaging import _count_normalize
from workers.decoded import DecodedFolder, DecodedPicture
from workers.imaging import ImageLimits, ImageLoader, NormalizedImage, normalize
from workers.store import ImageStore, StoreConfig


def _png(size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "big.png").write_bytes(_png((600, 500), 1))
    (root / "small.png").write_bytes(_png((40, 30), 2))
    return root


def _loader(root: Path, folder: Path, budget: int = 448 * 448, **limits: int) -> ImageLoader:
    shared = DecodedFolder(folder, max_bytes=64 * 1024 * 1024, pixel_budget=budget)
    return ImageLoader(
        ImageStore(StoreConfig(image_root=root)), ImageLimits(pixel_budget=budget, **limits), shared=shared
    )


def _load_in_child(root: str, folder: str, uri: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    calls: list[str] = []
    real = imaging.normalize

    def counting(data: bytes, u: str, limits: ImageLimits) -> NormalizedImage:
        calls.append(u)
        return real(data, u, limits)

    imaging.normalize = counting  # this child's own module; the parent's is untouched
    img = _loader(Path(root), Path(folder)).load(uri)
    out.put((calls, img.image.tobytes(), img.image.size, img.width, img.height, img.format, img.size_bytes))


def test_a_picture_decoded_by_one_process_is_read_back_by_another(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "decoded"
    ctx = mp.get_context("spawn")
    results = []
    for _ in range(2):  # one after the other: the second finds what the first kept
        out = ctx.Queue()
        p = ctx.Process(target=_load_in_child, args=(str(images), str(folder), "big.png", out))
        p.start()
        results.append(out.get(timeout=60))
        p.join(timeout=60)
        assert p.exitcode == 0
    (calls1, pixels1, *facts1), (calls2, pixels2, *facts2) = results
    assert calls1 == ["big.png"]  # the first process decoded
    assert calls2 == []  # the second did not
    direct = normalize((images / "big.png").read_bytes(), "big.png", ImageLimits())
    assert pixels1 == pixels2 == direct.image.tobytes()
    assert facts1 == facts2 == [direct.image.size, 600, 500, "PNG", (images / "big.png").stat().st_size]
    assert len(list(folder.glob("*.rgb"))) == 1


def test_the_kept_picture_is_what_normalize_gives(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "decoded"
    first = _loader(images, folder).load("small.png")
    calls = _count_normalize(monkeypatch)
    again = _loader(images, folder).load("file://small.png")  # a fresh process's loader, another URI
    assert calls == []
    assert again.uri == "file://small.png"
    assert again.sha256 == first.sha256
    assert again.image.mode == "RGB"
    assert again.image.tobytes() == first.image.tobytes()


def test_another_pixel_budget_never_reads_old_pictures(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "decoded"
    _loader(images, folder).load("big.png")
    calls = _count_normalize(monkeypatch)
    smaller = _loader(images, folder, budget=100 * 100).load("big.png")
    assert calls == ["big.png"]
    assert smaller.image.width * smaller.image.height <= 100 * 100
    assert len(list(folder.glob("*.rgb"))) == 2


def test_a_lower_pixel_limit_still_refuses_a_kept_picture(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "decoded"
    _loader(images, folder).load("big.png")
    with pytest.raises(ImageTooLarge):
        _loader(images, folder, max_pixels=1000).load("big.png")


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_file_is_deleted_and_the_picture_decoded_again(
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    folder = tmp_path / "decoded"
    good = _loader(images, folder).load("big.png").image.tobytes()
    (path,) = folder.glob("*.rgb")
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[-100] ^= 0xFF  # one pixel byte: the checksum catches it
    else:
        blob = bytearray(b"not a picture at all")
    path.write_bytes(bytes(blob))
    calls = _count_normalize(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="workers.decoded"):
        again = _loader(images, folder).load("big.png")
    assert calls == ["big.png"]
    assert again.image.tobytes() == good
    assert "damaged" in caplog.text
    assert path.read_bytes() != bytes(blob)  # written anew by the decode


def test_the_folder_is_trimmed_to_its_bound_least_recently_used_first(tmp_path: Path) -> None:
    picture = DecodedPicture(64, 64, "PNG", 10, Image.new("RGB", (64, 64), (1, 2, 3)))
    per_file = 64 * 64 * 3 + 200  # pixels + header, about
    folder = DecodedFolder(tmp_path / "d", max_bytes=10 * per_file, pixel_budget=64 * 64)
    for i in range(9):
        folder.put(f"{i:064x}", picture)
    files = sorted(folder.root.glob("*.rgb"))
    now = time.time()
    for i, path in enumerate(files):  # file i last used i minutes ago...
        os.utime(path, (now - 60 * (9 - i), now - 60 * (9 - i)))
    os.utime(files[0], (now, now))  # ...except the oldest, just used again
    for i in range(9, 14):
        folder.put(f"{i:064x}", picture)
    held = sum(p.stat().st_size for p in folder.root.glob("*.rgb"))
    assert held <= 10 * per_file
    assert files[0].exists()  # recently used: kept
    assert not files[1].exists()  # least recently used: gone
    assert folder.get(f"{13:064x}") is not None  # the newest is there


def test_stale_temporary_files_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    folder = DecodedFolder(tmp_path / "d", max_bytes=1 << 20, pixel_budget=64 * 64)
    folder.root.mkdir()
    stale, fresh = folder.root / ".tmp-dead", folder.root / ".tmp-writing"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    folder.trim()
    assert not stale.exists()
    assert fresh.exists()  # another process may still be writing it


def test_an_unwritable_folder_costs_only_the_sharing(
    images: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")  # a file where the folder should be: every write fails
    with caplog.at_level(logging.WARNING, logger="workers.decoded"):
        loader = _loader(images, blocker / "decoded")
        a = loader.load("big.png")
        b = loader.load("small.png")
    assert a.image.size[0] * a.image.size[1] <= 448 * 448 and b.image.size == (40, 30)
    assert caplog.text.count("cannot write") == 1  # said once, not per picture


def test_settings_place_the_folder_in_the_data_dir_and_zero_turns_it_off(tmp_path: Path) -> None:
    on = image_loader(Settings(data_dir=tmp_path, decoded_cache_mb=5, pixel_budget=1000))
    assert on.shared is not None
    assert on.shared.root == tmp_path / "decoded"
    assert on.shared.max_bytes == 5 * 1024 * 1024
    assert on.shared.pixel_budget == 1000
    assert image_loader(Settings(data_dir=tmp_path, decoded_cache_mb=0)).shared is None
