"""Throughput of the `hf` engine's modes against plain one-call `generate`: same batches, same run.

A random-weight Qwen2-VL is built in memory (seeded) at the Qwen2-VL-7B shape (no download) or at the
tiny test shape, and PIGReward-sized judge batches are generated through `_Model.run` (the engine's own
batched path) in each mode:

- plain:          one `model.generate` over the batch (the reference),
- shared-prefix:  the batch's common prefix prefilled once, its KV cache repeated over the batch,
- static-cache:   a preallocated KV cache (compiled decode on CUDA). The engine drops the shared prefix
                  when the static cache is on; the `cached` column shows what each mode really reused.

How, and why that way:

- Two batch kinds. Shared prefix only pays when rows share a prefix. `one-user`: every row is the same
  user's judgment (instructions + that user's ~`--context-tokens` of rationales are common, the best
  case). `mixed-user`: every row is a different user's judgment, so only the instructions are common —
  what a worker serving many users hands the batcher. One kind alone would over- or understate it.
- Judgments counted as production counts them. With `--swap` (on by default, as in production:
  `workers/position.py`) a judgment is two generations, (A, B) and (B, A). `--batch` is generations
  (rows, the engine's batch); the one-user batch holds both orders of each judgment, the mixed-user
  batch alternates orders. judgments/s = generations/s / 2 with swap, = generations/s without.
- Warm-up on the timed shape: each mode runs each timed batch once, untimed, first. The first call at a
  shape pays one-off costs (CUDA kernel selection, allocator growth, torch.compile of the static-cache
  decode step, which recompiles per cache length) that a small warm-up shape would leave in the timing.
- Repeats: `--repeats` (3) timed runs per mode and kind; the median is reported with [min, max].
  Within a repeat the modes run one after the other, so slow drift (clocks, heat, other load) touches
  every mode alike instead of whichever mode ran last.
- Phases, from the timed run itself. Generation starts at the first model forward (the shared-prefix
  prefill) or the `generate` call, whichever comes first (a forward pre-hook and a wrapper on
  `model.generate` mark it); everything before is preprocessing: chat template, tokenization, image
  patching, tensors to the device. A forward hook marks the end of the first forward inside `generate`:
  the first token is ready. So prefill = generate's setup (cache allocation: the static cache
  zero-fills its full length here) + the vision tower (transformers 5 runs it inside `generate`
  before the first forward, which is why preprocessing cannot end at the first forward) + the
  shared-prefix prefill when there is one + the prompt forward. Decode runs to `generate`'s return;
  `post` is what `run` does after it (token slicing, detokenization). TTFT = preprocessing + prefill:
  how long the batch waits for its first token. The hooks remove themselves once fired, so the
  (compiled) decode loop runs untouched; on CUDA each mark synchronizes the device. This beats a
  second `max_new_tokens=1` run: no extra run, and the same cache as the timed one.
- Preprocessing is also broken down outside the timed runs: `_Model.encode` over the batch (chat
  template + tokenization + image patching per request) and `qwen_vision.preprocess` over all images
  (what `run` does again for the pixel tensor).
- Same work, compared by token ids: greedy, every generation exactly `--gen-tokens` long (min = max new
  tokens). The generated ids are taken from `generate`'s output and compared row by row with the plain
  mode's; decoded text can hide differences (special tokens skipped, ids that decode alike).

    python bench/hf_throughput.py --shape 7b --batch 128                      # on a GPU host
    python bench/hf_throughput.py --shape tiny --batch 4 --gen-tokens 16      # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `python bench/hf_throughput.py`
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workers.backends.hf import _Model
    from workers.generation import GenerationRequest
    from workers.imaging import NormalizedImage

MODES = {  # (shared_prefix, static_cache) as HFEngineConfig takes them
    "plain": (False, False),
    "shared-prefix": (True, False),
    "static-cache": (True, True),  # the shipped config with the static cache on
}
KINDS = ("one-user", "mixed-user")
N_RATIONALES = 15


# -- workload --------------------------------------------------------------------------------------
def _rationales(tokenizer: PreTrainedTokenizerBase, rng: random.Random, context_tokens: int) -> list[str]:
    """One user's 15 rationales whose tokens add up to about `context_tokens`."""
    from bench.random_vlm import CORPUS

    words = CORPUS.split()
    rationales = [""] * N_RATIONALES
    counts = [0] * N_RATIONALES
    while sum(counts) < context_tokens:
        i = rng.randrange(N_RATIONALES)
        rationales[i] = f"{rationales[i]} {rng.choice(words)}".strip()
        counts[i] = len(tokenizer(rationales[i])["input_ids"])
    return rationales


def workload(
    tokenizer: PreTrainedTokenizerBase,
    kind: str,
    batch: int,
    context_tokens: int,
    image_px: int,
    gen_tokens: int,
    swap: bool = True,
    seed: int = 0,
) -> list[GenerationRequest]:
    """`batch` judge requests (generations) of `kind`, two drawn images each.

    one-user: one user's context in every row; with `swap` rows come in pairs (A, B), (B, A) of one
    judgment. mixed-user: a different user (own rationales) in every row; with `swap` every other row
    is a (B, A) order.
    """
    from bench.random_vlm import CORPUS
    from workers.drawing import DrawParams, draw_image
    from workers.generation import Sampling
    from workers.imaging import ImageLimits, normalize
    from workers.protocols import get_protocol

    if kind not in KINDS:
        raise ValueError(f"unknown batch kind {kind!r}; expected one of {KINDS}")
    rng = random.Random(f"{seed}-{kind}")
    words = CORPUS.split()

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
    requests: list[GenerationRequest] = []
    user = _rationales(tokenizer, rng, context_tokens)
    j = 0
    while len(requests) < batch:
        if kind == "mixed-user" and j > 0:
            user = _rationales(tokenizer, rng, context_tokens)
        prompt = f"prompt {j}: " + " ".join(rng.choice(words) for _ in range(12))
        a, b = image(2 * j), image(2 * j + 1)
        if kind == "one-user":
            orders = [(a, b), (b, a)] if swap else [(a, b)]
        else:
            orders = [(b, a) if swap and j % 2 else (a, b)]
        for first, second in orders:
            request = proto.judge_request(user, prompt, first, second, sampling)
            # exactly this decoding (a protocol may resize max_tokens): every mode does the same work
            requests.append(dataclasses.replace(request, sampling=sampling))
        j += 1
    return requests[:batch]


# -- one timed run ---------------------------------------------------------------------------------
@dataclass
class RunTiming:
    """One `_Model.run` over the batch, split at the marks the probe set (seconds)."""

    total: float
    pre: float  # run() start -> generation starts (first model forward or generate call)
    prefill: float  # generation start -> end of generate's first forward (first token ready)
    decode: float  # first token -> generate returned
    post: float  # generate returned -> run() returned
    tokens: list[list[int]]  # generated ids per row
    cached: int  # prompt tokens the engine reported as reused (shared prefix), per row
    prompt_tokens: list[int]
    peak_gib: float | None = None

    @property
    def ttft(self) -> float:
        return self.pre + self.prefill


class _Probe:
    """Marks on the shared model: generation start (first forward or `generate` call: preprocessing
    done), end of the first forward inside `generate` (first token), `generate`'s return, and its
    output ids. Hooks remove themselves once they fired, so decoding (compiled with the static cache on
    CUDA) runs without them."""

    def __init__(self, model: Any, cuda: bool) -> None:
        self.model = model
        self.cuda = cuda
        self.generation_start: float | None = None
        self.first_token: float | None = None
        self.generate_end: float | None = None
        self.new_ids: Any = None
        self._in_generate = False
        self._hooks: list[Any] = []

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def _start(self) -> None:
        if self.generation_start is None:
            self.generation_start = self._now()

    def _on_pre(self, module: Any, args: Any) -> None:
        self._start()
        self._hooks[0].remove()

    def _on_post(self, module: Any, args: Any, output: Any) -> None:
        if self._in_generate and self.first_token is None:
            self.first_token = self._now()
            self._hooks[1].remove()

    @contextlib.contextmanager
    def armed(self) -> Iterator[_Probe]:
        self.generation_start = self.first_token = self.generate_end = None
        self.new_ids = None
        original = self.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            self._start()
            self._in_generate = True
            try:
                out = original(*args, **kwargs)
            finally:
                self._in_generate = False
            self.generate_end = self._now()
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            width = input_ids.shape[1] if input_ids is not None else 0
            self.new_ids = out[:, width:]  # read after the run, outside the timing
            return out

        self._hooks = [
            self.model.register_forward_pre_hook(self._on_pre),
            self.model.register_forward_hook(self._on_post),
        ]
        self.model.generate = generate  # an instance attribute over the class method
        try:
            yield self
        finally:
            del self.model.generate
            for h in self._hooks:
                h.remove()
            self._hooks = []


def _timed_run(engine: _Model, requests: Sequence[GenerationRequest], cuda: bool) -> RunTiming:
    import torch

    probe = _Probe(engine.model, cuda)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with probe.armed():
        t0 = time.perf_counter()
        gens = engine.run(requests)
        if cuda:
            torch.cuda.synchronize()
        t_end = time.perf_counter()
    if probe.generation_start is None or probe.first_token is None or probe.generate_end is None:
        raise RuntimeError(
            "the hf engine no longer runs the model's forward inside model.generate as this bench expects; "
            "update _Probe in bench/hf_throughput.py"
        )
    tokens = [row[: r.sampling.max_tokens] for row, r in zip(probe.new_ids.tolist(), requests, strict=True)]
    return RunTiming(
        total=t_end - t0,
        pre=probe.generation_start - t0,
        prefill=probe.first_token - probe.generation_start,
        decode=probe.generate_end - probe.first_token,
        post=t_end - probe.generate_end,
        tokens=tokens,
        cached=min(g.usage.get("cached_tokens", 0) for g in gens),
        prompt_tokens=[g.usage["prompt_tokens"] for g in gens],
        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    )


# -- results ---------------------------------------------------------------------------------------
@dataclass
class ModeResult:
    mode: str
    runs: list[RunTiming] = field(default_factory=list)
    rows_equal_plain: int | None = None  # rows whose ids equal plain's in every repeat; None: no plain

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    @property
    def total_min(self) -> float:
        return min(r.total for r in self.runs)

    @property
    def total_max(self) -> float:
        return max(r.total for r in self.runs)

    @property
    def stable(self) -> bool:
        """Same ids in every repeat (greedy decoding must be repeatable)."""
        return all(r.tokens == self.runs[0].tokens for r in self.runs)


@dataclass
class KindResult:
    kind: str
    batch: int
    swap: bool
    common_prefix: int  # tokens all rows share before the first image token
    prompt_tokens: tuple[int, int]  # min, max per row
    encode_s: float  # median: _Model.encode over the batch (template, tokenization, patching)
    patch_s: float  # median: qwen_vision.preprocess over all images of the batch, once
    modes: dict[str, ModeResult] = field(default_factory=dict)

    @property
    def judgments(self) -> float:
        return self.batch / 2 if self.swap else float(self.batch)

    def gen_per_s(self, mode: str) -> float:
        return self.batch / self.modes[mode].median("total")

    def judgments_per_s(self, mode: str) -> float:
        return self.gen_per_s(mode) / (2 if self.swap else 1)

    def tokens_match(self, mode: str) -> bool | None:
        rows = self.modes[mode].rows_equal_plain
        return None if rows is None else rows == self.batch and self.modes[mode].stable

    def short_rows(self, gen_tokens: int) -> list[str]:
        """Modes and runs where a row generated fewer than `gen_tokens` (the modes did unequal work)."""
        return [
            f"{mode} repeat {i + 1}"
            for mode, m in self.modes.items()
            for i, run in enumerate(m.runs)
            if any(len(row) != gen_tokens for row in run.tokens)
        ]


@dataclass
class Report:
    device: str
    torch_version: str
    shape: str
    parameters: float
    args: argparse.Namespace
    kinds: list[KindResult] = field(default_factory=list)


# -- measuring -------------------------------------------------------------------------------------
def _common_prefix(rows: list[list[int]], image_token_id: int) -> int:
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest and rows[0][n] != image_token_id and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def _preprocessing(
    engine: _Model, requests: Sequence[GenerationRequest], repeats: int
) -> tuple[float, float, list[list[int]]]:
    """Median seconds of `encode` over the batch and of one `preprocess` over its images; the ids."""
    from workers.backends.qwen_vision import preprocess

    encode_s, patch_s = [], []
    encoded: list[tuple[list[int], list[Any]]] = []
    for _ in range(repeats):
        t = time.perf_counter()
        encoded = [engine.encode(r) for r in requests]
        encode_s.append(time.perf_counter() - t)
        images = [img for _, imgs in encoded for img in imgs]
        t = time.perf_counter()
        if images:
            preprocess(images, engine.vision)
        patch_s.append(time.perf_counter() - t)
    return statistics.median(encode_s), statistics.median(patch_s), [ids for ids, _ in encoded]


def measure_kind(
    kind: str,
    engines: dict[str, _Model],
    requests: Sequence[GenerationRequest],
    args: argparse.Namespace,
    cuda: bool,
) -> KindResult:
    import torch

    any_engine = next(iter(engines.values()))
    encode_s, patch_s, ids = _preprocessing(any_engine, requests, args.repeats)
    lengths = [len(r) for r in ids]
    result = KindResult(
        kind=kind,
        batch=len(requests),
        swap=args.swap,
        common_prefix=_common_prefix(ids, any_engine.image_token_id),
        prompt_tokens=(min(lengths), max(lengths)),
        encode_s=encode_s,
        patch_s=patch_s,
        modes={mode: ModeResult(mode) for mode in engines},
    )
    for engine in engines.values():  # warm-up: the timed batch itself, untimed
        _timed_run(engine, requests, cuda)
    gc.collect()
    gc.freeze()  # what is alive now is never scanned again: no long collector pauses inside timed runs
    for rep in range(args.repeats):
        for mode, engine in engines.items():
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            run = _timed_run(engine, requests, cuda)
            result.modes[mode].runs.append(run)
            mem = f", peak {run.peak_gib:.1f} GiB" if run.peak_gib is not None else ""
            print(
                f"  {kind:>10} repeat {rep + 1}/{args.repeats} {mode:>13}: total {run.total:7.3f}s = "
                f"preproc {run.pre:.3f} + prefill {run.prefill:.3f} + decode {run.decode:.3f} "
                f"+ post {run.post:.3f}; cached {run.cached} tokens/row{mem}",
                flush=True,
            )
    gc.unfreeze()
    plain = result.modes.get("plain")
    if plain is not None:
        for m in result.modes.values():
            m.rows_equal_plain = sum(
                all(run.tokens[row] == plain.runs[0].tokens[row] for run in m.runs)
                for row in range(result.batch)
            )
    return result


def _fmt_match(kind: KindResult, mode: str) -> str:
    match = kind.tokens_match(mode)
    if match is None:
        return "n/a (no plain run)"
    rows = kind.modes[mode].rows_equal_plain
    return f"{match} ({rows}/{kind.batch} rows)"


def summary(report: Report) -> str:
    """The final block: device, shape, batch, and per batch kind one line per mode."""
    a = report.args
    judg = (
        f"{a.batch / 2:g} judgments, swap on: (A,B) + (B,A)" if a.swap else f"{a.batch} judgments, swap off"
    )
    lines = [
        "=" * 40 + " SUMMARY " + "=" * 40,
        f"device:    {report.device}; torch {report.torch_version}",
        f"shape:     {report.shape} ({report.parameters:.2f}B parameters, random weights, seed {a.seed})",
        f"batch:     {a.batch} generations = {judg}",
        f"workload:  ~{a.context_tokens} context tokens, two {a.image_px}px images, {a.gen_tokens} generated "
        f"tokens per generation; {a.repeats} repeats per mode after a warm-up on the same batch",
        "times:     seconds, each column its own median over the repeats (total also [min, max]); "
        "TTFT = preproc + prefill; gen/s and judgm/s from the median total",
    ]
    head = (
        f"  {'mode':<14}{'total s [min, max]':>26}{'prefill s':>11}{'decode s':>10}{'TTFT s':>9}"
        f"{'preproc s':>11}{'gen/s':>9}{'judgm/s':>9}{'cached':>8}  tokens = plain"
    )
    for k in report.kinds:
        lines += [
            "",
            f"batch kind: {k.kind} ({k.batch} rows, {k.prompt_tokens[0]}-{k.prompt_tokens[1]} prompt tokens "
            f"per row, {k.common_prefix} common to all before the first image)",
            f"  preprocessing apart: encode over the batch {k.encode_s:.3f}s (template, tokenization, "
            f"image patching); patching all images once more {k.patch_s:.3f}s",
            head,
        ]
        for mode, m in k.modes.items():
            lines.append(
                f"  {mode:<14}{m.median('total'):>10.3f} [{m.total_min:.3f}, {m.total_max:.3f}]"
                f"{m.median('prefill'):>11.3f}{m.median('decode'):>10.3f}{m.median('ttft'):>9.3f}"
                f"{m.median('pre'):>11.3f}{k.gen_per_s(mode):>9.2f}{k.judgments_per_s(mode):>9.2f}"
                f"{m.runs[0].cached:>8}  {_fmt_match(k, mode)}"
            )
        short = k.short_rows(a.gen_tokens)
        lines.append(
            f"  WARNING: rows shorter than {a.gen_tokens} tokens in {', '.join(short)}: unequal work"
            if short
            else f"  every row of every run generated exactly {a.gen_tokens} tokens"
        )
        if "plain" in k.modes:
            base = k.gen_per_s("plain")
            lines.append(
                "  vs plain: "
                + ", ".join(f"{mode} {k.gen_per_s(mode) / base:.2f}x" for mode in k.modes if mode != "plain")
            )
    lines.append("=" * 89)
    return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    ap.add_argument("--batch", type=int, default=128, help="generations per batch (rows)")
    ap.add_argument("--context-tokens", type=int, default=1200)
    ap.add_argument("--image-px", type=int, default=448)
    ap.add_argument("--gen-tokens", type=int, default=350)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--kinds", default=",".join(KINDS), help="batch kinds: one-user, mixed-user")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--swap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="judge both orders: a judgment is two generations (default on, as in production)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    return ap


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    name = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name or platform.machine() or 'cpu'} (cpu, {torch.get_num_threads()} threads)"


def main(argv: Sequence[str] | None = None) -> Report:
    args = _parser().parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    kinds = [k for k in args.kinds.split(",") if k]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; expected some of {','.join(MODES)}")
    for k in kinds:
        if k not in KINDS:
            raise SystemExit(f"unknown batch kind {k!r}; expected some of {','.join(KINDS)}")
    if args.repeats < 1 or args.batch < 1:
        raise SystemExit("--repeats and --batch must be at least 1")

    import torch

    from bench.random_vlm import random_model
    from workers.backends.hf import _Model
    from workers.backends.hf_config import HFEngineConfig
    from workers.backends.qwen_vision import VisionSpec

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cuda = device.startswith("cuda")
    print(
        f"device: {device_name(device)}; torch {torch.__version__}; shape {args.shape}; batch {args.batch}; "
        f"~{args.context_tokens} context tokens, two {args.image_px}px images, {args.gen_tokens} generated tokens",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        model, tokenizer = random_model(args.shape, device, Path(tmp))
        loaded = (model, tokenizer, VisionSpec(max_pixels=448 * 448))
        params = sum(p.numel() for p in model.parameters()) / 1e9
        print(f"model built in {time.perf_counter() - t0:.1f}s ({params:.2f}B parameters)", flush=True)
        report = Report(device_name(device), str(torch.__version__), args.shape, params, args)
        engines: dict[str, _Model] = {}
        for mode in modes:
            shared_prefix, static_cache = MODES[mode]
            cfg = HFEngineConfig(
                judge_model="bench",
                min_new_tokens=args.gen_tokens,
                max_batch=args.batch,
                shared_prefix=shared_prefix,
                static_cache=static_cache,
            )
            engines[mode] = _Model(f"bench-{args.shape}", cfg, loaded=loaded)
            engines[mode].stop()  # run() is called directly; no batcher thread needed
        for kind in kinds:
            t = time.perf_counter()
            requests = workload(
                tokenizer,
                kind,
                args.batch,
                args.context_tokens,
                args.image_px,
                args.gen_tokens,
                swap=args.swap,
                seed=args.seed,
            )
            print(f"{kind}: {len(requests)} requests built in {time.perf_counter() - t:.1f}s", flush=True)
            report.kinds.append(measure_kind(kind, engines, requests, args, cuda))
    print(summary(report), flush=True)
    return report


if __name__ == "__main__":
    main()
