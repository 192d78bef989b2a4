"""What a throughput benchmark judges: distinct PNGs in the stack's store, users with reference pairs,
their contexts built through the queue, and the judgment specs to submit.

Everything is seeded, so two runs (or two pools in one run) judge the same kind of work. PNGs are
drawn in a process pool (drawing is CPU-bound Python) and uploaded from threads meanwhile.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import random
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from bench.stack import BUCKET, Stack

if TYPE_CHECKING:
    from models.judgments import JudgmentSpec


def _png(args: tuple[int, str, int]) -> bytes:
    """Image i as PNG bytes: `draw_image` with seeded attributes, or smooth noise (`kind="noise"`)."""
    i, kind, size = args
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(10_000 + i)
    if kind == "noise":  # smooth noise: ~460 KB at 512x512, like a real generated PNG
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    else:
        from workers.drawing import ATTRIBUTES, DrawParams, draw_image

        img = draw_image(DrawParams(**{a: float(rng.random()) for a in ATTRIBUTES}, seed=i), size=size)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class _Store:
    """Puts image i where its URI points: the bucket (`s3`) or the image root (`file`)."""

    def __init__(self, stack: Stack, store: str) -> None:
        self.s3 = stack.s3()
        self.root = Path(stack.env["PIGREWARD_IMAGE_ROOT"])
        (self.root / "img").mkdir(parents=True, exist_ok=True)
        self.store = store

    def uri(self, i: int) -> str:
        prefix = "file://img" if self.store == "file" else f"s3://{BUCKET}/img"
        return f"{prefix}/{i:05d}.png"

    def put(self, i: int, data: bytes) -> None:
        if self.store == "file":
            (self.root / "img" / f"{i:05d}.png").write_bytes(data)
        else:
            self.s3.put_object(Bucket=BUCKET, Key=f"img/{i:05d}.png", Body=data)


def upload_images(
    stack: Stack, n: int, kind: str, size: int = 512, store: str = "s3"
) -> tuple[list[str], int]:
    """n distinct PNGs in the bucket (or under the image root, `store="file"`); URIs and total bytes."""
    from pigreward.progress import bar

    target = _Store(stack, store)
    total = 0
    with (
        mp.get_context("spawn").Pool(max(1, os.cpu_count() or 1)) as pool,
        ThreadPoolExecutor(4) as uploader,
        bar(n, f"drawing+uploading {n} {size}x{size} PNGs", unit="img") as pbar,
    ):
        futures: list[Future[None]] = []
        for i, data in enumerate(pool.imap(_png, [(i, kind, size) for i in range(n)], chunksize=8)):
            total += len(data)
            futures.append(uploader.submit(target.put, i, data))
            pbar.update(1)
        for f in futures:
            f.result()
    return [target.uri(i) for i in range(n)], total


def create_users(uris: Sequence[str], n_users: int, seed: int = 0) -> list[str]:
    """Users with 5-15 reference pairs each, drawn from the uploaded images."""
    from models.db import session_scope
    from models.references import add_reference
    from models.tables import id_of
    from models.tenants import ensure_tenant
    from models.users import ensure_user
    from pigreward.synthetic import PROMPTS
    from tasks.runtime import get_db

    rng = random.Random(seed)
    names = [f"user{u:03d}" for u in range(n_users)]
    with session_scope(get_db()) as session:
        tenant = ensure_tenant(session=session, name="default")
        for name in names:
            user = ensure_user(session=session, tenant_id=id_of(tenant), external_id=name)
            for r in range(rng.randint(5, 15)):
                chosen, rejected = rng.sample(list(uris), 2)
                add_reference(
                    session=session,
                    user_id=id_of(user),
                    prompt=PROMPTS[r % len(PROMPTS)],
                    chosen_uri=chosen,
                    rejected_uri=rejected,
                )
    return names


def bootstrap_contexts(users: Sequence[str], backend: str, timeout_s: float = 300) -> None:
    """Build every user's context through the queue (the product path) before timing."""
    from tasks import bootstrap_context

    results = [bootstrap_context.apply_async(args=(u,), kwargs={"backend": backend}) for u in users]
    summaries = [r.get(timeout=timeout_s) for r in results]
    bad = [s for s in summaries if s.get("status") != "ready"]
    if bad:
        raise RuntimeError(f"context bootstrap failed: {bad[:3]}")


def judgment_specs(
    users: Sequence[str],
    uris: Sequence[str],
    n: int,
    tag: str,
    backend: str,
    seed: int = 1,
    swap: bool = False,
) -> list[JudgmentSpec]:
    """n judgments of random image pairs, round-robin over users; `tag` keeps prompts unique per run."""
    from models.judgments import JudgmentSpec
    from pigreward.synthetic import PROMPTS

    rng = random.Random(seed)
    specs = []
    for i in range(n):
        a, b = rng.sample(range(len(uris)), 2)
        specs.append(
            JudgmentSpec(
                tenant="default",
                user=users[i % len(users)],
                prompt=f"{PROMPTS[i % len(PROMPTS)]} [{tag} {i}]",
                image_a=uris[a],
                image_b=uris[b],
                backend=backend,
                options={"swap": swap},
            )
        )
    return specs
