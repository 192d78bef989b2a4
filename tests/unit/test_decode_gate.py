"""Decoding within a memory budget (issue 12, defect 4): many threads decoding huge pictures at once
hold no more than the per-process budget of pixels, and a big RGBA picture costs ~5 bytes a pixel."""

from __future__ import annotations

import io
import resource
import threading
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from workers.imaging import GATE, DecodeGate, ImageLimits, normalize


def _png(width: int, height: int, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), (200, 100, 50, 255)[: len(mode)]).save(buf, format="PNG")
    return buf.getvalue()


def test_threads_never_hold_more_than_the_budget() -> None:
    data = _png(3000, 2000)  # 6 MP each
    limits = ImageLimits(decode_budget=13_000_000)  # two at a time
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(GATE.held)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: normalize(data, f"img{i}", limits), range(16)))
    stop.set()
    sampler.join()
    assert all(r.image.mode == "RGB" and r.width == 3000 for r in results)
    assert max(seen) <= limits.decode_budget
    assert max(seen) == 12_000_000  # and the budget is used: two at once
    assert GATE.held == 0


def test_a_picture_over_the_whole_budget_decodes_alone() -> None:
    gate = DecodeGate()
    held_by_big: list[int] = []

    def big() -> None:
        with gate.hold(500, budget=100):
            held_by_big.append(gate.held)

    with gate.hold(50, budget=100):
        t = threading.Thread(target=big)
        t.start()
        t.join(0.3)
        assert t.is_alive() and not held_by_big  # waits while anything else is held
    t.join(5)
    assert held_by_big == [500] and gate.held == 0  # then runs, alone


def test_a_huge_rgba_png_costs_about_five_bytes_a_pixel() -> None:
    data = _png(6000, 5000)  # 30 MP: 120 MB as RGBA
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = normalize(data, "huge.png", ImageLimits())
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert image.image.size[0] * image.image.size[1] <= ImageLimits().pixel_budget
    assert grown_mb < 30e6 * 6 / 2**20, grown_mb  # not the ~8 B/pixel of a premultiplied copy
