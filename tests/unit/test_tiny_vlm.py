"""tests.support.tiny_vlm: offline tiny Qwen2-VL / Qwen2.5-VL checkpoints that load and generate."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForImageTextToText,
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from tests.support.tiny_vlm import SPECIAL_TOKENS, build_tiny_vlm, build_tokenizer
from workers.backends.qwen_vision import (
    VisionSpec,
    expand_image_pads,
    image_token_count,
    mm_token_type_ids,
    preprocess,
)

KINDS = ("qwen2_vl", "qwen2_5_vl")
CONCRETE = {"qwen2_vl": Qwen2VLForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module", params=KINDS)
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    kind = request.param
    return kind, build_tiny_vlm(tmp_path_factory.mktemp(kind), kind)


@pytest.fixture(scope="module")
def loaded(checkpoint: tuple[str, Path]):  # type: ignore[no-untyped-def]
    kind, path = checkpoint
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True).eval()
    return kind, path, tokenizer, model


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [
        Image.fromarray(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)),  # grid 1x4x6 -> 6 tokens
        Image.fromarray(rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)),  # 84x56 -> grid 1x6x4 -> 6 tokens
    ]


def _prompt(tokenizer, question: str, grid_thw: torch.Tensor, merge_size: int) -> str:  # type: ignore[no-untyped-def]
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": question}, {"type": "image"}, {"type": "image"}],
        }
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.endswith("<|im_start|>assistant\n")
    return expand_image_pads(text, grid_thw, merge_size)


# ---- files and config -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_build_writes_loadable_files_quickly_and_idempotently(kind: str, tmp_path: Path) -> None:
    build_tiny_vlm(tmp_path / "warm", kind)  # first build pays transformers' lazy imports
    start = time.perf_counter()
    out = build_tiny_vlm(tmp_path / "a", kind, seed=3)
    assert time.perf_counter() - start < 2.0
    assert out == tmp_path / "a"
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (out / name).is_file(), name
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_vlm(out, kind, seed=3) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime  # untouched

    # same seed elsewhere -> same weights; another seed -> other weights (and the dir is rebuilt)
    build_tiny_vlm(tmp_path / "b", kind, seed=3)
    assert hashlib.sha256((tmp_path / "b" / "model.safetensors").read_bytes()).hexdigest() == digest
    build_tiny_vlm(out, kind, seed=4)
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() != digest


def test_build_restores_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_vlm(tmp_path, "qwen2_vl", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        build_tiny_vlm(tmp_path, "llava")  # type: ignore[arg-type]


def test_config_fields(checkpoint: tuple[str, Path]) -> None:
    kind, path = checkpoint
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    assert config.model_type == kind
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert config.image_token_id == ids["<|image_pad|>"]
    assert config.video_token_id == ids["<|video_pad|>"]
    assert config.vision_start_token_id == ids["<|vision_start|>"]
    assert config.vision_end_token_id == ids["<|vision_end|>"]
    text = config.text_config
    assert text.vocab_size == len(tokenizer)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (64, 2, 4)
    assert (text.num_key_value_heads, text.intermediate_size) == (2, 128)
    assert text.eos_token_id == ids["<|im_end|>"]
    assert text.pad_token_id == text.bos_token_id == ids["<|endoftext|>"]
    # transformers 5.x keeps M-RoPE settings in text_config.rope_parameters
    assert text.rope_parameters["rope_type"] == "default"
    assert text.rope_parameters["mrope_section"] == [2, 3, 3]
    assert sum(text.rope_parameters["mrope_section"]) * 2 == text.hidden_size // text.num_attention_heads
    vision = config.vision_config
    assert vision.depth == 1 and vision.patch_size == 14 and vision.spatial_merge_size == 2
    if kind == "qwen2_vl":
        assert (vision.embed_dim, vision.hidden_size) == (32, 64)
    else:
        assert (vision.hidden_size, vision.out_hidden_size) == (32, 64)
        assert list(vision.fullatt_block_indexes) == [0] and vision.window_size == 112

    generation = json.loads((path / "generation_config.json").read_text(encoding="utf-8"))
    assert generation["eos_token_id"] == ids["<|im_end|>"]
    assert generation["do_sample"] is False
    spec = VisionSpec.from_pretrained_dir(path)
    assert spec == VisionSpec(max_pixels=200704)


# ---- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_tokens(tmp_path: Path) -> None:
    build_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert 900 <= len(tokenizer) <= 1100
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token

    for text in [
        "The user prefers the warm image; its colour is better in every dimension.",
        "Score: 7/10 — naïve café façade, über 東京 你好 привет 😀 ✓\n\n  indented\ttab, it's fine!",
        "Unseen words like xylophone-quokka still round-trip: ÆØÅ ßẞ ½ ∑ 🤖🧠",
    ]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        assert all(0 <= i < len(tokenizer) for i in ids)
    # frequent corpus words are single tokens
    assert len(tokenizer.tokenize(" image")) == 1
    assert len(tokenizer.tokenize(" better")) == 1


def test_chat_template(tmp_path: Path) -> None:
    build_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "chat_template" in config
    messages = [
        {"role": "system", "content": "Judge images."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which is better?"}]},
        {"role": "assistant", "content": "Image 1."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nJudge images.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which is better?<|im_end|>\n"
        "<|im_start|>assistant\nImage 1.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


# ---- loading and generation ------------------------------------------------------------------


def test_concrete_class_loads(checkpoint: tuple[str, Path]) -> None:
    kind, path = checkpoint
    model = CONCRETE[kind].from_pretrained(str(path), local_files_only=True)
    assert type(model) is CONCRETE[kind]
    assert model.dtype == torch.float32


def test_generate_two_images_left_padded_batch(loaded) -> None:  # type: ignore[no-untyped-def]
    kind, path, tokenizer, model = loaded
    assert type(model) is CONCRETE[kind]
    spec = VisionSpec.from_pretrained_dir(path)
    pixel_values, grid_thw = preprocess(_images(), spec)
    assert grid_thw.tolist() == [[1, 4, 6], [1, 6, 4]]
    texts = [
        _prompt(tokenizer, "Which image is better?", grid_thw, spec.merge_size),
        _prompt(tokenizer, "The user prefers warm colour. Which image is better for this user?", grid_thw, 2),
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    assert lengths[0] < lengths[1]
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[0, -1] == 1  # left padded
    per_image = [image_token_count(g, spec.merge_size) for g in grid_thw]
    assert (batch.input_ids[0] == model.config.image_token_id).sum() == sum(per_image)

    inputs = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        # every prompt carries both images: the images of row 0, then those of row 1
        "pixel_values": torch.cat([pixel_values, pixel_values]),
        "image_grid_thw": torch.cat([grid_thw, grid_thw]),
        # transformers 5.x needs the modality of each token to build M-RoPE positions
        "mm_token_type_ids": mm_token_type_ids(
            batch.input_ids, model.config.image_token_id, model.config.video_token_id
        ),
    }
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
    with torch.no_grad():
        first = model.generate(**inputs, **kwargs)
        second = model.generate(**inputs, **kwargs)
    width = batch.input_ids.shape[1]
    assert first.shape == (2, width + 8)
    assert torch.equal(first[:, :width], batch.input_ids)
    assert torch.equal(first, second)  # greedy decoding is deterministic

    # left padding does not change what a prompt produces: each row equals that prompt alone
    for row, text in enumerate(texts):
        single = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            alone = model.generate(
                input_ids=single.input_ids,
                attention_mask=single.attention_mask,
                pixel_values=pixel_values,
                image_grid_thw=grid_thw,
                mm_token_type_ids=mm_token_type_ids(single.input_ids, model.config.image_token_id),
                **kwargs,
            )
        assert torch.equal(alone[0, -8:], first[row, -8:]), row

    decoded = tokenizer.batch_decode(first[:, width:], skip_special_tokens=True)
    assert len(decoded) == 2 and all(isinstance(d, str) for d in decoded)


def test_forward_logits_are_padding_invariant(loaded) -> None:  # type: ignore[no-untyped-def]
    """Left padding + M-RoPE: the last-token logits of a padded row equal the unpadded prompt's."""
    _, path, tokenizer, model = loaded
    spec = VisionSpec.from_pretrained_dir(path)
    pixel_values, grid_thw = preprocess(_images(), spec)
    short = _prompt(tokenizer, "Better?", grid_thw, spec.merge_size)
    long = _prompt(tokenizer, "Which of the two images is better for this user, and why?", grid_thw, 2)
    image_id = model.config.image_token_id
    batch = tokenizer([short, long], return_tensors="pt", padding=True)
    alone = tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        padded = model(
            **batch,
            pixel_values=torch.cat([pixel_values, pixel_values]),
            image_grid_thw=torch.cat([grid_thw, grid_thw]),
            mm_token_type_ids=mm_token_type_ids(batch.input_ids, image_id),
        ).logits[0, -1]
        single = model(
            **alone,
            pixel_values=pixel_values,
            image_grid_thw=grid_thw,
            mm_token_type_ids=mm_token_type_ids(alone.input_ids, image_id),
        ).logits[0, -1]
    assert torch.allclose(padded, single, atol=1e-4)
