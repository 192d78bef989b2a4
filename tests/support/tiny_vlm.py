"""Tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints on disk, built offline in well under two seconds.

`build_tiny_vlm(dir, kind)` writes a directory that `AutoTokenizer` and `AutoModelForImageTextToText`
(or `Qwen2VLForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration`) load with
`local_files_only=True`: config.json, model.safetensors, generation_config.json,
preprocessor_config.json and the tokenizer files. Nothing is downloaded. The tokenizer and the
configuration come from `bench.random_vlm`; the model is a 2-layer, 64-wide text decoder with a
1-block vision tower whose outputs are noise, but deterministic for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.random_vlm import SPECIAL_TOKENS, TinyKind, build_tokenizer, tiny_config, write_json

_BUILD_VERSION = 1  # bump when the files written below change, so cached builds are redone
_STAMP = ".tiny_vlm.json"
_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

PREPROCESSOR_CONFIG = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 200704,
    "merge_size": 2,
    "min_pixels": 3136,
    "patch_size": 14,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 200704, "shortest_edge": 3136},
    "temporal_patch_size": 2,
}


def _is_built(out_dir: Path, stamp: dict) -> bool:
    stamp_path = out_dir / _STAMP
    if not stamp_path.is_file() or not all((out_dir / name).is_file() for name in _FILES):
        return False
    try:
        return json.loads(stamp_path.read_text(encoding="utf-8")) == stamp
    except ValueError:
        return False


def build_tiny_vlm(out_dir: Path, kind: TinyKind = "qwen2_vl", seed: int = 0) -> Path:
    """Write a loadable tiny checkpoint of `kind` into `out_dir` (created if needed); return `out_dir`.

    Idempotent: a directory already holding a complete build of the same kind, seed and builder version
    is left untouched; otherwise the files are (re)written. The same seed gives the same weights; the
    global torch RNG state is restored afterwards.
    """
    if kind not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown tiny VLM kind {kind!r}; expected 'qwen2_vl' or 'qwen2_5_vl'")
    out_dir = Path(out_dir)
    stamp = {"kind": kind, "seed": seed, "version": _BUILD_VERSION}
    if _is_built(out_dir, stamp):
        return out_dir

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig
    from transformers.utils import logging as hf_logging

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / _STAMP).unlink(missing_ok=True)

    tokenizer = build_tokenizer(out_dir)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config_json = tiny_config(kind, token_ids, len(tokenizer))
    write_json(out_dir / "config.json", config_json)
    config = AutoConfig.from_pretrained(str(out_dir), local_files_only=True)

    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(rng_state)
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|im_end|>"],
        pad_token_id=token_ids["<|endoftext|>"],
        do_sample=False,
    )

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        # Writes the weights under the published checkpoints' names (model.layers.*, visual.*, lm_head).
        model.save_pretrained(str(out_dir))
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    write_json(out_dir / "config.json", config_json)  # the hub layout, not this version's re-serialization
    write_json(out_dir / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    write_json(out_dir / _STAMP, stamp)
    return out_dir
