"""The token budget of a judge prompt: counted before sending, so a context never overflows the server.

A server refuses a prompt whose tokens plus `max_tokens` exceed its context length (a 400, stored as a
`rejected` judgment). The worker counts the prompt first with the judge's own tokenizer and chat
template, and the image tokens from the image sizes and the checkpoint's preprocessor config (Qwen-VL:
one token per 28x28 pixels after resizing), exactly as the server will. When a user's context does not
fit, the policy is to keep the most recent rationales (the last references added) and leave the oldest
out; how many were left out is recorded on the judgment (`usage.rationales_dropped`).

Without the tokenizer files (a worker host that has no copy of the checkpoint), the count falls back to
an estimate that errs high: one token per two characters of text (Qwen's tokenizer averages about
four on English) plus the same image arithmetic; `usage.prompt_tokens_estimated` says so.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from core.errors import BackendRejected
from workers.generation import GenerationRequest, ImagePart, TextPart

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 8192  # ops/ launch scripts serve the judge with this (worst-case prompt + answer)
_ESTIMATE_CHARS_PER_TOKEN = 2
_IMAGE_WRAP_TOKENS = 2  # <|vision_start|> ... <|vision_end|>
_MESSAGE_TOKENS = 5  # <|im_start|>role\n ... <|im_end|>\n


class TokenCounter(Protocol):
    exact: bool

    def tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens of `request` as the server will see them (chat template and images included)."""
        ...


class _Vision:
    """Image tokens from the checkpoint's preprocessor settings (Qwen-VL defaults without one)."""

    def __init__(self, directory: Path | None) -> None:
        from workers.backends.qwen_vision import VisionSpec

        self.spec = VisionSpec.from_pretrained_dir(directory) if directory else VisionSpec()

    def tokens(self, width: int, height: int) -> int:
        from workers.backends.qwen_vision import smart_resize

        s = self.spec
        h, w = smart_resize(height, width, s.factor, s.min_pixels, s.max_pixels)
        return (h // s.patch_size) * (w // s.patch_size) // (s.merge_size**2)


class TokenizerCounter:
    """Counts with the judge checkpoint's own tokenizer and chat template (local files only)."""

    exact = True

    def __init__(self, source: str) -> None:
        from transformers import AutoTokenizer

        from workers.backends.hf import resolve_checkpoint

        directory, _ = resolve_checkpoint(source)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.vision = _Vision(directory)
        self._lock = threading.Lock()  # tokenizers are not safe to share between threads mid-call

    def tokens(self, request: GenerationRequest) -> int:
        messages, images = [], 0
        for m in request.messages:
            content: list[dict[str, Any]] = []
            for part in m.parts:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                elif isinstance(part, ImagePart):
                    content.append({"type": "image"})
                    images += self.vision.tokens(*part.image.image.size) - 1
            messages.append({"role": m.role, "content": content})
        with self._lock:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids) + images


class EstimateCounter:
    """An upper-leaning estimate for hosts without the tokenizer files."""

    exact = False

    def __init__(self) -> None:
        self.vision = _Vision(None)

    def tokens(self, request: GenerationRequest) -> int:
        total = 0
        for m in request.messages:
            total += _MESSAGE_TOKENS
            for part in m.parts:
                if isinstance(part, TextPart):
                    total += math.ceil(len(part.text) / _ESTIMATE_CHARS_PER_TOKEN)
                elif isinstance(part, ImagePart):
                    total += self.vision.tokens(*part.image.image.size) + _IMAGE_WRAP_TOKENS
        return total + _MESSAGE_TOKENS


class EngineCounter:
    """An in-process engine counts exactly what it will run."""

    exact = True

    def __init__(self, count: Callable[[GenerationRequest], int]) -> None:
        self._count = count

    def tokens(self, request: GenerationRequest) -> int:
        return self._count(request)


def load_counter(source: str | None) -> TokenCounter:
    """The tokenizer counter for `source` (path or HF-cache id), or the estimate when it is not here."""
    if source:
        try:
            return TokenizerCounter(source)
        except (BackendRejected, OSError, ValueError) as exc:
            reason = exc.message if isinstance(exc, BackendRejected) else str(exc)
            log.warning("counting prompt tokens by estimate: no tokenizer for %s (%s)", source, reason)
    return EstimateCounter()


class Fit:
    """The request that fits, and what it took."""

    def __init__(self, request: GenerationRequest, tokens: int, kept: int, dropped: int) -> None:
        self.request, self.tokens, self.kept, self.dropped = request, tokens, kept, dropped


def fit_rationales(
    rationales: Sequence[str],
    build: Callable[[Sequence[str]], GenerationRequest],
    counter: TokenCounter,
    context_length: int,
) -> Fit:
    """The request with the most recent rationales that fit `context_length` with its answer.

    Keeps a suffix of `rationales` (binary search over how many): whatever is kept, every request of the
    user with a prompt of similar length keeps the same ones, so they still share a prefix.
    """
    request = build(rationales)
    answer = request.sampling.max_tokens
    tokens = counter.tokens(request)
    if tokens + answer <= context_length:
        return Fit(request, tokens, len(rationales), 0)
    total = len(rationales)
    best: Fit | None = None
    lo, hi = 0, total - 1  # fitting is monotone in the number kept: find the largest that fits
    while lo <= hi:
        mid = (lo + hi) // 2
        trial = build(rationales[total - mid :] if mid else [])
        n = counter.tokens(trial)
        if n + answer <= context_length:
            best, lo = Fit(trial, n, mid, total - mid), mid + 1
        else:
            hi = mid - 1
    if best is None:
        bare = counter.tokens(build([]))
        raise BackendRejected(
            f"the prompt needs {bare} tokens without any rationale ({tokens} with its context) plus "
            f"{answer} for the answer: more than the judge's context length of {context_length} tokens "
            "(shorten the prompt, lower PIGREWARD_JUDGE_MAX_TOKENS or serve a longer context)"
        )
    return best
