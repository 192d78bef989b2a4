"""Judgments/s of the `hf` engine against plain one-call `generate`, same batch, same run.

A random-weight model is built in memory at the Qwen2-VL-7B shape (no download) or at the tiny
test shape, and one user's batch of PIGReward-sized judgments is generated three ways:

- plain:          one `model.generate` over the batch (the reference),
- shared-prefix:  instructions + the user's context prefilled once, KV cache repeated over the batch,
- static-cache:   a preallocated KV cache (compiled decode on CUDA).

Every mode generates exactly `--gen-tokens` tokens per judgment (min = max new tokens), greedy, so
outputs must agree token for token; the script checks that. Figures go to stdout.

    python bench/hf_throughput.py --shape 7b --batch 128            # on a GPU host
    python bench/hf_throughput.py --shape tiny --batch 8 --gen-tokens 32   # CPU smoke run
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `python bench/hf_throughput.py`
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workers.backends.qwen_vision import VisionSpec
    from workers.generation import GenerationRequest
    from workers.imaging import NormalizedImage


def workload(
    tokenizer: PreTrainedTokenizerBase,
    batch: int,
    context_tokens: int,
    image_px: int,
    gen_tokens: int,
    seed: int = 0,
) -> list[GenerationRequest]:
    """One user's batch of judge requests: ~`context_tokens` of rationales, two drawn images each."""
    from bench.random_vlm import CORPUS
    from workers.drawing import DrawParams, draw_image
    from workers.generation import Sampling
    from workers.imaging import ImageLimits, normalize
    from workers.protocols import get_protocol

    rng = random.Random(seed)
    words = CORPUS.split()
    # 15 rationales whose tokens add up to about `context_tokens`
    rationales = [""] * 15
    while sum(len(tokenizer(r)["input_ids"]) for r in rationales) < context_tokens:
        i = rng.randrange(15)
        rationales[i] = f"{rationales[i]} {rng.choice(words)}".strip()

    def image(i: int) -> NormalizedImage:
        buf = io.BytesIO()
        params = DrawParams(
            warmth=rng.random(),
            saturation=rng.random(),
            brightness=rng.random(),
            clutter=rng.random(),
            centering=rng.random(),
            symmetry=rng.random(),
            seed=i,
        )
        draw_image(params, size=image_px).save(buf, "PNG")
        return normalize(buf.getvalue(), f"bench-{i}", ImageLimits(pixel_budget=image_px * image_px))

    proto = get_protocol("pigreward-v1")
    sampling = Sampling(max_tokens=gen_tokens)
    return [
        proto.judge_request(
            rationales,
            f"prompt {i}: " + " ".join(rng.choice(words) for _ in range(12)),
            image(2 * i),
            image(2 * i + 1),
            sampling,
        )
        for i in range(batch)
    ]


MODES = {  # (shared_prefix, static_cache)
    "plain": (False, False),
    "shared-prefix": (True, False),
    "static-cache": (True, True),  # static_cache excludes shared_prefix
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--context-tokens", type=int, default=1200)
    ap.add_argument("--image-px", type=int, default=448)
    ap.add_argument("--gen-tokens", type=int, default=350)
    ap.add_argument("--modes", default="plain,shared-prefix,static-cache")
    ap.add_argument("--device", default="auto")
    return ap


def _time_mode(
    mode: str,
    args: argparse.Namespace,
    loaded: tuple[Any, Any, VisionSpec],
    requests: Sequence[GenerationRequest],
    device: str,
) -> tuple[list[str], float]:
    """Generate the batch once in `mode` after a warm-up; its texts and judgments/s (printed too)."""
    import torch

    from workers.backends.hf import _Model
    from workers.backends.hf_config import HFEngineConfig

    shared_prefix, static_cache = MODES[mode]
    cfg = HFEngineConfig(
        judge_model="bench",
        min_new_tokens=args.gen_tokens,
        max_batch=args.batch,
        shared_prefix=shared_prefix,
        static_cache=static_cache,
    )
    engine = _Model(f"bench-{args.shape}", cfg, loaded=loaded)
    engine.stop()
    engine.run(requests[: min(2, len(requests))])  # warm-up (kernels, compile)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    gens = engine.run(requests)
    if cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    rate = len(requests) / secs
    prompt = gens[0].usage["prompt_tokens"]
    mem = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    print(
        f"{mode:>14}: {rate:8.2f} judgments/s  ({secs:.1f}s for {len(requests)}; "
        f"{prompt} prompt tokens, {gens[0].usage['completion_tokens']} generated{mem})"
    )
    return [g.text for g in gens], rate


def main() -> None:
    args = _parser().parse_args()

    import torch

    from bench.random_vlm import random_model
    from workers.backends.qwen_vision import VisionSpec

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"device: {name}; torch {torch.__version__}; shape {args.shape}; batch {args.batch}; "
        f"~{args.context_tokens} context tokens, two {args.image_px}px images, {args.gen_tokens} generated tokens"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, tokenizer = random_model(args.shape, device, Path(tmp))
        loaded = (model, tokenizer, VisionSpec(max_pixels=448 * 448))
        print(
            f"model built in {time.perf_counter() - t0:.1f}s "
            f"({sum(p.numel() for p in loaded[0].parameters()) / 1e9:.2f}B parameters)"
        )
        requests = workload(loaded[1], args.batch, args.context_tokens, args.image_px, args.gen_tokens)
        outputs: dict[str, list[str]] = {}
        rates: dict[str, float] = {}
        for mode in args.modes.split(","):
            outputs[mode], rates[mode] = _time_mode(mode, args, loaded, requests, device)
        base = rates.get("plain")
        for mode, rate in rates.items():
            if mode != "plain" and base:
                same = sum(a == b for a, b in zip(outputs[mode], outputs["plain"], strict=True))
                print(
                    f"{mode:>14}: {rate / base:.2f}x plain generate; identical outputs {same}/{len(requests)}"
                )


if __name__ == "__main__":
    main()
