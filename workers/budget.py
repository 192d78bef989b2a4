"""The token budget of a judge prompt: counted before sending, so a context never overflows the server.

A server refuses a prompt whose tokens plus `max_tokens` exceed its context length (a 400, stored as a
`rejected` judgment). The worker counts the prompt first with the judge's own tokenizer and chat
template, and the image tokens from the image sizes and the checkpoint's preprocessor config (Qwen-VL:
one token per 28x28 pixels after resizing), exactly as the server will. When a user's context does not
fit, the policy is to keep the most recent rationales (the last references added) and leave the oldest
out; how many were left out is recorded on the judgment (`usage.rationales_dropped`).

Without the tokenizer files (a worker host that has no copy of the checkpoint) or a chat template to
render with, the count falls back to an estimate that errs high: ASCII text at two characters a token
(Qwen's tokenizer averages about four on English), digits and other characters at one each, plus the
same image arithmetic; `usage.prompt_tokens_estimated` says so. A margin of 16 tokens + 1% of the
context length stays free besides the answer, for a server whose template differs by a few tokens.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from core.errors import BackendRejected
from workers.generation import (
    ChatMessage,
    GenerationRequest,
    ImagePart,
    Sampling,
    TextPart,
    template_messages,
)

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 8192  # when a server reports no max_model_len (SGLang and vLLM do): a safe floor
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
        from workers.backends.qwen_vision import image_tokens

        return image_tokens(width, height, self.spec)


class TokenizerCounter:
    """Counts with the judge checkpoint's own tokenizer and chat template (local files only), or with
    `chat_template` (a jinja file) when the server renders prompts with another one."""

    exact = True

    def __init__(self, source: str, chat_template: Path | None = None) -> None:
        from transformers import AutoTokenizer

        from workers.backends.hf import resolve_checkpoint

        directory, _ = resolve_checkpoint(source)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if chat_template is not None:
            self.tokenizer.chat_template = Path(chat_template).read_text(encoding="utf-8")
        self.vision = _Vision(directory)
        self._lock = threading.Lock()  # tokenizers are not safe to share between threads mid-call

    def tokens(self, request: GenerationRequest) -> int:
        messages, images = template_messages(request)
        with self._lock:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids) + sum(self.vision.tokens(*image.size) - 1 for image in images)  # pads counted once


class EstimateCounter:
    """An estimate that errs high, for hosts without the tokenizer files: ASCII letters and punctuation
    at two characters a token, every digit and every other character (accents, CJK, emoji) a token."""

    exact = False

    def __init__(self) -> None:
        self.vision = _Vision(None)

    def tokens(self, request: GenerationRequest) -> int:
        total = 0
        for m in request.messages:
            total += _MESSAGE_TOKENS
            for part in m.parts:
                if isinstance(part, TextPart):
                    total += _estimate_text(part.text)
                elif isinstance(part, ImagePart):
                    total += self.vision.tokens(*part.image.image.size) + _IMAGE_WRAP_TOKENS
        return total + _MESSAGE_TOKENS


def _estimate_text(text: str) -> int:
    single = sum(1 for ch in text if ch.isdigit() or not ch.isascii())
    return single + math.ceil((len(text) - single) / _ESTIMATE_CHARS_PER_TOKEN)


class EngineCounter:
    """An in-process engine counts exactly what it will run."""

    exact = True

    def __init__(self, count: Callable[[GenerationRequest], int]) -> None:
        self._count = count

    def tokens(self, request: GenerationRequest) -> int:
        return self._count(request)


def load_counter(source: str | None, chat_template: Path | None = None) -> TokenCounter:
    """The tokenizer counter for `source` (path or HF-cache id), or the estimate when it cannot count
    here (no files, no chat template, a template that fails): tried once on a small prompt."""
    if source:
        try:
            counter = TokenizerCounter(source, chat_template)
            counter.tokens(_TRIAL)
            return counter
        except Exception as exc:  # noqa: BLE001 - any failure to count means: estimate instead
            reason = exc.message if isinstance(exc, BackendRejected) else f"{type(exc).__name__}: {exc}"
            log.warning("counting prompt tokens by estimate: cannot count with %s (%s)", source, reason)
    return EstimateCounter()


_TRIAL = GenerationRequest((ChatMessage("user", (TextPart("How many tokens?"),)),), Sampling(max_tokens=1))


class Fit:
    """The request that fits, and what it took."""

    def __init__(self, request: GenerationRequest, tokens: int, kept: int, dropped: int) -> None:
        self.request, self.tokens, self.kept, self.dropped = request, tokens, kept, dropped


def margin_for(context_length: int) -> int:
    """Tokens kept free besides the answer: a server's template may differ from the counter's by a few."""
    return 16 + context_length // 100


def fit_rationales(
    rationales: Sequence[str],
    build: Callable[[Sequence[str]], GenerationRequest],
    counter: TokenCounter,
    context_length: int,
) -> Fit:
    """The request with the most recent rationales that fit `context_length` with its answer and a
    small margin (`margin_for`).

    Keeps a suffix of `rationales` (binary search over how many): whatever is kept, every request of the
    user with a prompt of similar length keeps the same ones, so they still share a prefix.
    """
    request = build(rationales)
    answer = request.sampling.max_tokens + margin_for(context_length)
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
            f"{answer} for the answer and a margin: more than the judge's context length of {context_length} tokens "
            "(shorten the prompt, lower PIGREWARD_JUDGE_MAX_TOKENS or serve a longer context)"
        )
    return best
