"""In-process transformers engine for Qwen2-VL and Qwen2.5-VL (the released PIGReward checkpoints).

Weights come from a local path or the HF cache, offline (`local_files_only`): nothing is downloaded
at run time. bf16 on CUDA, fp32 on CPU. Concurrent `generate` calls from many threads are gathered
by one batcher thread per model into a single batched `generate` (left padding); requests with a JSON
schema are constrained by xgrammar, token by token. Images are turned into Qwen-VL patches by hand
(`qwen_vision`), so no processor class (which would need torchvision) is involved.

A request with `top_logprobs > 0` gets each answer token's log-probability and its most likely
alternatives (`Generation.logprobs`), recorded step by step while generating (`LogprobRecorder`): the
distribution after the penalties (and, when sampling, temperature and top-k/p) and before a grammar's
mask, so a verdict the grammar forces still shows what the model would have said. Batches that ask for
none run exactly as before.
"""

from __future__ import annotations

import hashlib
import inspect
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import BackendRejected
from workers.backends.hf_config import HFEngineConfig
from workers.backends.qwen_vision import (
    IMAGE_PAD,
    VisionSpec,
    expand_image_pads,
    image_tokens,
    mm_token_type_ids,
    preprocess,
)
from workers.generation import (
    ChatMessage,
    Generation,
    GenerationRequest,
    ModelIdentity,
    Sampling,
    TokenLogprob,
    template_messages,
)

_SNAPSHOT_PARENT = "snapshots"


def resolve_checkpoint(name: str, revision: str | None = None) -> tuple[Path, str]:
    """A local checkpoint dir and its revision: a path as given, or the HF cache entry (offline)."""
    path = Path(name).expanduser()
    if path.is_dir():
        parts = path.resolve().parts
        if _SNAPSHOT_PARENT in parts[:-1] and parts[-2] == _SNAPSHOT_PARENT:
            return path, parts[-1]
        config = path / "config.json"
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config.is_file() else "unknown"
        return path, f"local-{digest}"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        local = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as exc:
        raise BackendRejected(
            f"model {name!r} is neither a local directory nor in the HF cache; weights are never downloaded "
            f"at run time: fetch it once with `huggingface-cli download {name}` and point to the path"
        ) from exc
    return local, local.name


@dataclass
class _Job:
    request: GenerationRequest
    future: Future[Generation] = field(default_factory=Future)


class _Model:
    """One loaded checkpoint with its tokenizer, vision spec and batcher thread."""

    def __init__(
        self, name: str, config: HFEngineConfig, loaded: tuple[Any, Any, VisionSpec] | None = None
    ) -> None:
        """Load `name` (path or HF-cache id), or wrap an already built (model, tokenizer, vision spec)."""
        import torch

        self.config = config
        # transformers' model and tokenizer types are too loose to check calls against: held as Any
        self.model: Any
        self.tokenizer: Any
        if loaded is None:
            from transformers import AutoModelForImageTextToText, AutoTokenizer

            self.path, revision = resolve_checkpoint(name, config.revision)
            self.device = torch.device(
                ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
            )
            if config.dtype == "auto":
                dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            else:
                dtype = getattr(torch, config.dtype)
            kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
            if config.attn_implementation:
                kwargs["attn_implementation"] = config.attn_implementation
            model: Any = AutoModelForImageTextToText.from_pretrained(self.path, **kwargs)
            self.model = model.to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.path, local_files_only=True, padding_side="left"
            )
            if config.chat_template:  # pinned, as SGLang's --chat-template does
                self.tokenizer.chat_template = Path(config.chat_template).read_text(encoding="utf-8")
            self.vision = VisionSpec.from_pretrained_dir(self.path)
        else:  # benchmarks build random-weight models in memory
            self.model, self.tokenizer, self.vision = loaded
            self.device = next(self.model.parameters()).device
            revision = "in-memory"
        self.identity = ModelIdentity(name, revision)
        # decoding comes from each request's Sampling only, never the checkpoint's generation_config.json
        self.model.generation_config = _generation_config_class()()
        cfg = self.model.config
        self.image_token_id = int(
            getattr(cfg, "image_token_id", None) or self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        )
        self.video_token_id = getattr(cfg, "video_token_id", None)
        self.vocab_size = int(cfg.get_text_config().vocab_size)
        self.stop_ids = sorted(
            {
                i
                for i in (
                    self.tokenizer.convert_tokens_to_ids("<|im_end|>"),
                    self.tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                    self.tokenizer.eos_token_id,
                )
                if isinstance(i, int) and i >= 0
            }
        )
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        )
        forward_args = inspect.signature(self.model.forward).parameters
        self.wants_mm_types = "mm_token_type_ids" in forward_args  # transformers >= 5 computes M-RoPE from it
        self.cache_kwarg = "cache" if "cache" in forward_args else "past_key_values"  # renamed in 5.x
        self._grammar: Any = None
        self._tokenizer_lock = threading.Lock()  # the batcher and token counts share one tokenizer
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"hf-batcher-{name}", daemon=True)
        self._thread.start()

    # -- batching ---------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Future[Generation]:
        job = _Job(request)
        self._jobs.put(job)
        return job.future

    def stop(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            deadline = time.monotonic() + self.config.batch_wait_s
            while len(batch) < self.config.max_batch:
                try:
                    nxt = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)
                    break
                batch.append(nxt)
            groups: dict[Any, list[_Job]] = {}
            for j in batch:
                groups.setdefault(j.request.sampling, []).append(j)
            for jobs in groups.values():
                try:
                    results = self.run([j.request for j in jobs])
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                    for j in jobs:
                        j.future.set_exception(exc)
                else:
                    for j, res in zip(jobs, results, strict=True):
                        j.future.set_result(res)

    # -- one batched generate ---------------------------------------------------------------
    def _chat(self, request: GenerationRequest) -> tuple[str, list[Any]]:
        """The rendered chat (one pad per image) and its images, in order."""
        messages, images = template_messages(request)
        with self._tokenizer_lock:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, images

    def encode(self, request: GenerationRequest) -> tuple[list[int], list[Any]]:
        """Token ids of one chat (image pads expanded) and its images, in order."""
        text, images = self._chat(request)
        pixel_grids = preprocess(images, self.vision) if images else None
        if pixel_grids is not None:
            text = expand_image_pads(text, pixel_grids[1], self.vision.merge_size)
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, images

    def count(self, request: GenerationRequest) -> int:
        """What `encode` would give in length, from the image sizes (no pixels processed)."""
        text, images = self._chat(request)
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        total = len(ids)
        for img in images:
            width, height = img.size
            total += image_tokens(int(width), int(height), self.vision) - 1  # the pad already counted
        return total

    def run(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One batched generation. With a shared prefix, rows are laid out [prefix][pads][suffix].

        Judgments of one user share instructions + context (about two thirds of the prompt); that
        prefix is prefilled once and its KV cache repeated over the batch, so generate only prefills
        each row's own prompt and images. Greedy outputs are the same as without it.
        """
        import torch

        encoded = [self.encode(r) for r in requests]
        share = self.config.shared_prefix and not self.config.static_cache
        prefix = self._common_prefix([ids for ids, _ in encoded]) if share else 0
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, :prefix] = torch.tensor(ids[:prefix], dtype=torch.long)
            input_ids[row, width - (len(ids) - prefix) :] = torch.tensor(ids[prefix:], dtype=torch.long)
            attention[row, :prefix] = 1
            attention[row, width - (len(ids) - prefix) :] = 1
        all_images = [img for _, imgs in encoded for img in imgs]
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention.to(self.device),
        }
        if all_images:
            pixel_values, grid = preprocess(all_images, self.vision)
            inputs["pixel_values"] = pixel_values.to(self.device, self.model.dtype)
            inputs["image_grid_thw"] = grid.to(self.device)
        if self.wants_mm_types:
            inputs["mm_token_type_ids"] = mm_token_type_ids(
                input_ids, self.image_token_id, self.video_token_id
            ).to(self.device)
        sampling = requests[0].sampling  # the batcher groups requests by their sampling
        max_new = max(r.sampling.max_tokens for r in requests)
        extra: dict[str, Any] = {}
        if self.config.min_new_tokens:
            extra["min_new_tokens"] = min(self.config.min_new_tokens, max_new)
        if self.config.static_cache:
            extra["cache_implementation"] = "static"
        gen_kwargs: dict[str, Any] = {
            "generation_config": generation_config(sampling, max_new, self.stop_ids, self.pad_id, **extra),
        }
        if sampling.temperature > 0 and sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        processors: list[Any] = []
        if sampling.frequency_penalty or sampling.presence_penalty:
            processors.append(OpenAIPenalties(width, sampling.frequency_penalty, sampling.presence_penalty))
        top_k = max(r.top_logprobs for r in requests)
        recorder = LogprobRecorder(top_k) if top_k > 0 else None
        if recorder is not None:  # before the grammar: what the model would say, not what it may say
            processors.append(recorder)
        if any(r.json_schema is not None or r.grammar is not None for r in requests):
            processors.append(self.grammar_processor(requests))
        if processors:
            gen_kwargs["logits_processor"] = processors
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            if prefix:
                gen_kwargs[self.cache_kwarg] = self._prefill(input_ids[:1, :prefix], len(encoded))
            if hasattr(self.model.model, "rope_deltas"):
                self.model.model.rope_deltas = None  # positions are recomputed for this batch
            out = self.model.generate(**inputs, **gen_kwargs)
        new = out[:, width:].tolist()
        steps = recorder.finish(out[:, width:]) if recorder is not None else None
        results = []
        for row, request in enumerate(requests):
            tokens = new[row][: request.sampling.max_tokens]
            stop_at = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
            finished = stop_at is not None
            kept = tokens[:stop_at] if finished else tokens
            with self._tokenizer_lock:
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
            cut = _cut_at_stop(text, request.sampling.stop)
            if cut is not None:  # as OpenAI servers do: the stop string ends the answer and is left out
                text, finished = cut, True
            logprobs = None
            if steps is not None and request.top_logprobs > 0:
                written = len(text) if cut is not None else None
                logprobs = self._token_logprobs(steps, row, kept, written, request.top_logprobs)
            usage = {
                "prompt_tokens": len(encoded[row][0]),
                "completion_tokens": len(kept) + (1 if finished and stop_at is not None else 0),
            }
            if prefix:
                usage["cached_tokens"] = prefix
            results.append(
                Generation(
                    text=text,
                    finish_reason="stop" if finished else "length",
                    model=self.identity.model_id,
                    usage=usage,
                    logprobs=logprobs,
                )
            )
        return results

    def _token_logprobs(
        self, steps: RecordedSteps, row: int, kept: list[int], length: int | None, top: int
    ) -> list[TokenLogprob]:
        """One entry per answer token before the stop token (after a stop string, only those that wrote
        part of the first `length` characters): its text decoded on its own, its log-probability, and
        `top` alternatives."""
        out: list[TokenLogprob] = []
        written = 0
        with self._tokenizer_lock:
            for step, token_id in enumerate(kept):
                if length is not None and written >= length:
                    break
                token = self.tokenizer.decode([token_id], skip_special_tokens=True)
                alternatives: dict[str, float] = {}
                for alt_id, alt_logprob in zip(
                    steps.top_ids[row][step][:top], steps.top_values[row][step][:top], strict=True
                ):
                    alt = self.tokenizer.decode([alt_id], skip_special_tokens=False)
                    alternatives.setdefault(alt, alt_logprob)  # sorted: the likelier spelling first
                out.append(
                    TokenLogprob(token=token, logprob=steps.chosen[row][step], top_logprobs=alternatives)
                )
                written += len(token)
        return out

    def _common_prefix(self, rows: list[list[int]]) -> int:
        """Length of the token prefix all rows share, cut before any image token; 0 if not worth it."""
        if len(rows) < 2:
            return 0
        shortest = min(len(r) for r in rows)
        n = 0
        first = rows[0]
        while n < shortest - 1 and first[n] != self.image_token_id and all(r[n] == first[n] for r in rows):
            n += 1
        return n if n >= self.config.min_shared_prefix else 0

    def _prefill(self, prefix_ids: Any, batch: int) -> Any:
        """The KV cache of the shared text prefix, computed once and repeated `batch` times."""
        import torch

        ones = torch.ones_like(prefix_ids)
        out = self.model(
            input_ids=prefix_ids.to(self.device), attention_mask=ones.to(self.device), use_cache=True
        )
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(batch)
        return cache

    def grammar_processor(self, requests: Sequence[GenerationRequest]) -> Any:
        from workers.backends.grammar import GrammarCompiler, GrammarLogits

        if self._grammar is None:
            self._grammar = GrammarCompiler(self.tokenizer, self.vocab_size, self.stop_ids)
        return GrammarLogits(self._grammar, requests)

    @property
    def context_length(self) -> int | None:
        cfg = self.model.config.get_text_config()
        value = getattr(cfg, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) else None


def generation_config(
    sampling: Sampling, max_new: int, stop_ids: list[int], pad_id: int, **extra: Any
) -> Any:
    """A generate config from `sampling` alone: every field set, so nothing comes from the checkpoint's
    `generation_config.json` (transformers fills only unset fields from it)."""
    sample = sampling.temperature > 0
    return _generation_config_class()(
        max_new_tokens=max_new,
        do_sample=sample,
        temperature=sampling.temperature if sample else 1.0,
        top_p=sampling.top_p,
        top_k=max(sampling.top_k, 0),  # 0: off, as -1 is for the servers
        min_p=sampling.min_p,
        repetition_penalty=sampling.repetition_penalty,
        no_repeat_ngram_size=0,
        num_beams=1,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
        **extra,
    )


def _generation_config_class() -> Any:
    """transformers' GenerationConfig (its constructor is untyped)."""
    from transformers import GenerationConfig

    return GenerationConfig


class OpenAIPenalties:
    """Frequency and presence penalties as OpenAI servers apply them: over the generated tokens only."""

    def __init__(self, prompt_width: int, frequency: float, presence: float) -> None:
        self.width, self.frequency, self.presence = prompt_width, frequency, presence

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.width :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


LOGPROB_FLOOR = -9999.0  # what OpenAI reports for a token far outside the top alternatives


@dataclass
class RecordedSteps:
    """Per row and generated step: the chosen token's log-probability and the top alternatives."""

    chosen: list[list[float]]
    top_values: list[list[list[float]]]
    top_ids: list[list[list[int]]]


class LogprobRecorder:
    """A logits processor that changes nothing and records each step's log-softmax: its top-k entries,
    and, one step later (once the token is chosen), the chosen token's. Memory: one (batch, vocab) row
    of the last step plus k values per step, however long the answer."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._last: Any = None
        self._chosen: list[Any] = []
        self._top_values: list[Any] = []
        self._top_ids: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logprobs = torch.log_softmax(scores.float(), dim=-1).clamp_(min=LOGPROB_FLOOR)
        if self._last is not None:  # the token chosen at the previous step is now the last input
            self._chosen.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        values, ids = logprobs.topk(min(self.k, logprobs.shape[-1]), dim=-1)
        self._top_values.append(values)
        self._top_ids.append(ids)
        self._last = logprobs
        return scores

    def finish(self, generated: Any) -> RecordedSteps:
        """The record, given the generated tokens (batch, steps) that followed the prompt."""
        import torch

        steps = len(self._top_values)
        if self._last is not None and generated.shape[1] >= steps > len(self._chosen):
            last = generated[:, steps - 1 : steps].to(self._last.device)
            self._chosen.append(self._last.gather(1, last).squeeze(1))
        self._last = None
        if not steps:
            rows = generated.shape[0]
            return RecordedSteps(
                [[] for _ in range(rows)], [[] for _ in range(rows)], [[] for _ in range(rows)]
            )
        return RecordedSteps(
            chosen=torch.stack(self._chosen, dim=1).tolist(),
            top_values=torch.stack(self._top_values, dim=1).tolist(),
            top_ids=torch.stack(self._top_ids, dim=1).tolist(),
        )


def _cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """The text before the first stop string, or None when none occurs."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(hits)] if hits else None


class HFEngine:
    """The `hf` engine: judge and reasoner checkpoints loaded on first use, batched generation."""

    def __init__(self, config: HFEngineConfig) -> None:
        self.config = config
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    def _model(self, role: Literal["judge", "reasoner"]) -> _Model:
        name = (
            self.config.judge_model
            if role == "judge"
            else (self.config.reasoner_model or self.config.judge_model)
        )
        with self._lock:
            if name not in self._models:
                self._models[name] = _Model(name, self.config)
            return self._models[name]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        futures = [self._model(r.role).submit(r) for r in requests]
        return [f.result() for f in futures]

    def identity(self, role: Literal["judge", "reasoner"]) -> ModelIdentity:
        return self._model(role).identity

    def context_length(self, role: Literal["judge", "reasoner"]) -> int | None:
        return self._model(role).context_length

    def tokens(self, role: Literal["judge", "reasoner"], request: GenerationRequest) -> int:
        """The prompt's exact token count (image pads expanded) as this engine would send it."""
        return self._model(role).count(request)

    def close(self) -> None:
        with self._lock:
            for m in self._models.values():
                m.stop()
            self._models.clear()


__all__ = ["ChatMessage", "HFEngine", "HFEngineConfig", "resolve_checkpoint"]
