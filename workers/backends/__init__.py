"""Judge backends behind one protocol, created by name from a `BackendConfig`.

- `lite`: CPU, no weights; interpretable image statistics and a per-user Bradley-Terry model.
- `sglang`: the LVLM protocols over HTTP to SGLang (or any OpenAI-compatible server).
- `hf`: the LVLM protocols on in-process transformers (Qwen2-VL / Qwen2.5-VL).
- `null`: benchmarks only (`bench/orchestration.py`): a fixed verdict at once, no model; not listed
  in `BACKENDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UnknownBackend
from core.extras import require
from workers.backends.base import Backend
from workers.backends.hf_config import HFEngineConfig
from workers.backends.lite import LiteBackend
from workers.backends.openai_http import HTTPEngineConfig
from workers.generation import Engine, Sampling

BACKENDS = ("lite", "sglang", "hf")
LVLM_BACKENDS = ("sglang", "hf")


@dataclass(frozen=True)
class BackendConfig:
    """Everything backends need, read from settings once by the entry point."""

    protocol: str = "pigreward-v1"
    template_dir: Path | None = None
    grammar: str = "off"  # pigreward-v1 loop control: off | ebnf | regex
    context_length: int | None = None  # None: the server's max_model_len, else 8192
    tokenizer: str | None = None  # counts prompt tokens (sglang); None: estimated
    chat_template: Path | None = None  # the template the server renders with, for counting
    judge_sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=512))
    reasoner_sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=256))
    judge_top_logprobs: int = 5  # alternatives per judge answer token; 0: no log-probabilities asked
    http: HTTPEngineConfig = field(
        default_factory=lambda: HTTPEngineConfig(judge_url="http://127.0.0.1:30000")
    )
    hf: HFEngineConfig = field(default_factory=HFEngineConfig)


def available_backends() -> list[str]:
    return list(BACKENDS)


def create_backend(name: str, config: BackendConfig | None = None) -> Backend:
    """A new backend instance; one per worker process is enough (they are thread-safe)."""
    config = config or BackendConfig()
    if name == "lite":
        return LiteBackend()
    if name == "null":  # benchmark backend: measures the orchestration without a model
        from workers.backends.null import NullBackend

        return NullBackend()
    if name not in LVLM_BACKENDS:
        raise UnknownBackend(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    from workers.backends.lvlm import LVLMBackend
    from workers.protocols import get_protocol

    engine: Engine
    if name == "sglang":
        from workers.backends.openai_http import OpenAIHTTPEngine

        engine = OpenAIHTTPEngine(config.http)
    else:
        require("the hf backend", "torch", "transformers")  # one clear line on a core-only install
        from workers.backends.hf import HFEngine

        engine = HFEngine(config.hf)
    return LVLMBackend(
        name,
        engine,
        get_protocol(config.protocol, config.template_dir, config.grammar),
        judge_sampling=config.judge_sampling,
        reasoner_sampling=config.reasoner_sampling,
        context_length=config.context_length,
        tokenizer=config.tokenizer,
        chat_template=config.chat_template,
        top_logprobs=config.judge_top_logprobs,
    )


__all__ = ["BACKENDS", "Backend", "BackendConfig", "LiteBackend", "available_backends", "create_backend"]
