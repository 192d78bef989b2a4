"""Hostile-image load: many distinct 7000x7000 PNGs (about 140 KB each, 49 MP = ~200 MB decoded) through
one `-c 64` worker, with the peak RSS of the worker printed against its documented budget.

Each PNG is small on the wire and inside the default pixel limit (50 MP), so nothing refuses it; only
the per-process decode budget (`PIGREWARD_DECODE_BUDGET_PIXELS`, `workers.imaging.DecodeGate`) keeps
64 threads from decoding 64 of them at once (64 x 200 MB). The budget documented in README is

    peak RSS <= idle RSS + decode_budget_pixels x 8 bytes

(a 49 MP RGBA decode peaks at ~5 bytes a pixel: 4 for the picture, 1 for the band being shrunk;
the rest is allocator slack and the buffers of 64 threads, measured at up to ~7). The run stands up
its own stack (private Redis, a fresh Postgres database, a SeaweedFS S3 server), submits one judgment
per image (image i against image i+1, all distinct bytes), waits for every row to end and prints
peak RSS, the budget, and the rows by status. Exit code 1 if a row is lost or unfinished, or the peak
is over the budget.

    python -m bench.hostile_images                      # 200 images, -c 64 (the issue's figure)
    pigreward bench hostile-images --images 20 --concurrency 16
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ops.stack import (
    REPO,
    celery_worker,
    configured,
    postgres_database,
    redis_server,
    s3_client,
    seaweed_s3,
    stack_env,
)

BUCKET = "hostile-images"
SIDE = 7000
BYTES_PER_PIXEL = 8
"""The documented cost of a pixel being decoded (see the module docstring)."""


def hostile_png(i: int, base: bytes) -> bytes:
    """`base` with a text chunk naming `i` inserted after IHDR: the same pixels, distinct bytes."""
    text = b"Comment\x00hostile " + str(i).encode()
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4
    return base[:ihdr_end] + chunk + base[ihdr_end:]


def base_png(side: int) -> bytes:
    """A `side` x `side` RGBA PNG that compresses to a few hundred KB (flat colour, a few bars)."""
    img = Image.new("RGBA", (side, side), (200, 120, 40, 255))
    for k in range(0, side, side // 7):
        img.paste((20, 60, 200, 255), (k, 0, k + side // 50, side))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (a prefork pool's), from /proc."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found]


class PeakSampler:
    """Samples a process's RSS every `interval` seconds in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Outcome:
    images: int
    concurrency: int
    decode_budget_pixels: int
    idle_mb: float
    peak_mb: float
    counts: dict[str, int]
    submitted: int
    seconds: float

    @property
    def budget_mb(self) -> float:
        return self.idle_mb + self.decode_budget_pixels * BYTES_PER_PIXEL / 2**20

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.counts.items() if s in ("done", "rejected", "invalid"))

    @property
    def ok(self) -> bool:
        rows = sum(self.counts.values())
        return rows == self.submitted and self.finished == rows and self.peak_mb <= self.budget_mb

    def render(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        verdict = "OK" if self.ok else "NOT MET"
        return (
            f"{self.images} distinct {SIDE}x{SIDE} PNGs, {self.submitted} judgments, one worker --pool threads "
            f"-c {self.concurrency}, decode budget {self.decode_budget_pixels / 1e6:.0f} MP\n"
            f"worker RSS: idle {self.idle_mb:.0f} MB, peak {self.peak_mb:.0f} MB, budget {self.budget_mb:.0f} MB "
            f"(idle + {self.decode_budget_pixels / 1e6:.0f} MP x {BYTES_PER_PIXEL} B)\n"
            f"rows: {counts} ({self.submitted - sum(self.counts.values())} lost) in {self.seconds:.0f} s\n"
            f"SUMMARY {verdict}: peak {self.peak_mb:.0f} MB of {self.budget_mb:.0f} MB; "
            f"{self.finished} of {self.submitted} judgments finished"
        )


@contextmanager
def hostile_stack(tmp: Path) -> Iterator[dict[str, str]]:
    with redis_server(tmp) as redis_url, postgres_database() as db_url, seaweed_s3(tmp / "s3") as s3:
        s3_client(s3).create_bucket(Bucket=BUCKET)
        env = stack_env(
            redis_url=redis_url, database_url=db_url, s3_endpoint=s3, image_root=tmp / "images", data_dir=tmp
        )
        yield env


def run(images: int, concurrency: int, progress: bool = True) -> Outcome:
    from tqdm import tqdm

    from bench.workload import create_users
    from core.settings import get_settings
    from tasks.submit import judgment_spec, submit_judgments

    with tempfile.TemporaryDirectory(prefix="pigreward-hostile-") as d:
        tmp = Path(d)
        with hostile_stack(tmp) as env, configured(env):
            s3 = s3_client(env["PIGREWARD_S3_ENDPOINT_URL"])
            print(f"encoding one {SIDE}x{SIDE} PNG ...", file=sys.stderr)
            base = base_png(SIDE)
            print(f"uploading {images} distinct copies ({len(base) / 1024:.0f} KB each) ...", file=sys.stderr)
            uris = []
            for i in tqdm(range(images), desc="upload", unit="img", disable=not progress, file=sys.stderr):
                key = f"hostile/{i:04d}.png"
                s3.put_object(Bucket=BUCKET, Key=key, Body=hostile_png(i, base))
                uris.append(f"s3://{BUCKET}/{key}")
            refs = _small_references(s3)
            [user] = create_users(refs, 1)
            log = tmp / "worker.log"
            budget = get_settings().decode_budget_pixels
            with celery_worker(env, "context,judge,bulk", log, concurrency=concurrency) as worker:
                time.sleep(2)
                idle = rss_mb(worker.pid)
                specs = [
                    judgment_spec(user, f"hostile {i}", uris[i], uris[(i + 1) % images])
                    for i in range(images)
                ]
                start = time.monotonic()
                with PeakSampler(worker.pid) as sampler:
                    ids = submit_judgments(specs)
                    counts = _wait(ids, progress)
                seconds = time.monotonic() - start
            return Outcome(images, concurrency, budget, idle, sampler.peak, counts, len(ids), seconds)


def _small_references(s3: Any) -> list[str]:
    from workers.drawing import DrawParams, draw_image

    uris = []
    for i in range(6):
        img = draw_image(
            DrawParams(
                warmth=i / 5, saturation=0.5, brightness=0.5, clutter=0.5, centering=0.5, symmetry=0.5, seed=i
            ),
            size=128,
        )
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        key = f"refs/{i}.png"
        s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
        uris.append(f"s3://{BUCKET}/{key}")
    return uris


def _wait(ids: list[int], progress: bool, timeout_s: float = 1800) -> dict[str, int]:
    from sqlmodel import col, func, select
    from tqdm import tqdm

    from core.enums import TERMINAL_STATUSES
    from models.db import session_scope
    from models.tables import Judgment
    from tasks.runtime import get_db

    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(ids), desc="judged", unit="judgment", disable=not progress, file=sys.stderr) as bar:
        while True:
            with session_scope(get_db()) as session:
                stmt = (
                    select(Judgment.status, func.count())
                    .where(col(Judgment.id).in_(ids))
                    .group_by(Judgment.status)
                )
                counts = {str(s): int(n) for s, n in session.exec(stmt)}
            done = sum(n for s, n in counts.items() if s in {str(t) for t in TERMINAL_STATUSES})
            bar.update(done - bar.n)
            if done >= len(ids) or time.monotonic() > deadline:
                return counts
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=200, help="distinct 7000x7000 PNGs (one judgment each)")
    parser.add_argument("--concurrency", type=int, default=64, help="the worker's -c")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    outcome = run(args.images, args.concurrency)
    print(outcome.render())
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
