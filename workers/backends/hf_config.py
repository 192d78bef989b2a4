"""Settings of the `hf` engine, importable without torch (the `lite` path never loads torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HFEngineConfig:
    """Which checkpoints to load and how to batch. `reasoner_model` None: the judge model also reasons."""

    judge_model: str = "jeongeunnn/pigreward"
    reasoner_model: str | None = "jeongeunnn/pigreward-bootstrap"
    revision: str | None = None  # HF cache revision (branch, tag or commit); None: the cached "main"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bfloat16 | float16 | float32
    max_batch: int = 16
    batch_wait_s: float = 0.01  # how long the batcher waits for more requests to fill a batch
    attn_implementation: str | None = None  # e.g. "sdpa", "flash_attention_2"
    shared_prefix: bool = True  # prefill the batch's common prefix (instructions + context) once
    static_cache: bool = False  # preallocated KV cache (compiled decode on CUDA); excludes shared_prefix
    min_shared_prefix: int = 64  # tokens; shorter common prefixes are not worth a separate prefill
    min_new_tokens: int = 0  # benchmarks only: force a generation length
    chat_template: str | None = None  # a jinja file used instead of the checkpoint's own template
