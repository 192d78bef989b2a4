"""Random-weight Qwen2-VL models at a named shape, with a tokenizer built offline: no download.

What `bench/hf_throughput.py` measures the `hf` engine with (the released checkpoints' 7B shape, or a
tiny one for a CPU smoke run), and what the tests' tiny checkpoints are made of
(`tests/support/tiny_vlm.py` writes them to disk).

The tokenizer is a byte-level BPE (Qwen2's pre-tokenizer regex, NFC normalizer) trained on a small
built-in English corpus, plus Qwen's special tokens after the learned vocabulary (as in Qwen), and the
Qwen2-VL chat template. The tiny shape is a 2-layer, 64-wide text decoder with a 1-block vision
tower; its outputs are noise, but deterministic for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHAT_TEMPLATE",
    "CORPUS",
    "QWEN2_VL_7B",
    "SPECIAL_TOKENS",
    "TinyKind",
    "build_tokenizer",
    "random_model",
    "tiny_config",
]

TinyKind = Literal["qwen2_vl", "qwen2_5_vl"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2's pre-tokenizer split (from Qwen2's tokenizer.json).
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# Qwen2-VL-Instruct's chat template: string or list content; image/video parts become vision pads.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = """\
You are a helpful assistant that judges images for one user.
The user prefers warm colour, soft light and calm scenes over busy ones.
Look at the first image and the second image, then say which image is better for this user.
Give a score for each dimension: aesthetics, alignment with the prompt, and personal preference.
Answer with the number of the better image, then a short reason for every dimension.
A warm image has orange, red and golden tones; a cold image has blue, grey and green tones.
This user likes sunsets, autumn forests, candle light and old wooden houses.
This user dislikes harsh shadows, neon colours, noisy textures and crowded streets.
Image 1 shows a quiet lake at dawn with pink clouds and a small boat.
Image 2 shows a city street at night with bright neon signs and many people.
For this user, image 1 is better: the colour is warm, the scene is calm and the light is soft.
The prompt asks for a cat sleeping on a sofa near a window in the afternoon sun.
Both images follow the prompt, but the first one has better composition and sharper detail.
The second image has a strange hand, blurry eyes and text that cannot be read.
Score: aesthetics 7 out of 10, alignment 8 out of 10, preference 9 out of 10.
Dimension one is aesthetics: beauty, balance, lighting, colour harmony and detail.
Dimension two is alignment: how well the image matches every object and attribute in the prompt.
Dimension three is personalization: how well the image fits what this user prefers.
The reference pairs show what the user chose before and why they chose it.
In the first reference, the user picked the painting with the golden field over the grey harbour.
In the second reference, the user picked the portrait with soft skin tones over the one with hard contrast.
From these choices we learn that the user values warmth, softness, nature and simple shapes.
Now compare the two new images for the prompt and decide which one the user would prefer.
If both images are equally good, say that they tie, but only when there is truly no difference.
Do not guess when the image is broken; say that the image is invalid and explain the problem.
The answer must use the format: better image, then scores, then reasons, one per line.
Colour, color, colours and colors are all fine; the user writes British English.
Photographs, paintings, drawings, renders and illustrations are all images.
A dog runs on the beach; waves break on the sand; the sky is clear and blue.
A red apple, a green pear and three yellow lemons lie on a white plate on a wooden table.
The mountain is covered with snow, and the valley below is full of flowers in spring.
An old man reads a book by the fire while rain falls outside the window.
A robot walks through a garden of glass flowers under two moons.
The castle stands on a hill above the sea, and birds fly around its towers.
Which image better matches the prompt, and which one would this user like more?
The user prefers the image with more natural light and less saturated colour.
Good images have clear subjects, pleasing colour, correct anatomy and no artifacts.
Bad images have extra fingers, melted faces, broken text, seams and strange noise.
Please think about each dimension before you give the final answer.
Final answer: image 1 is better. Reason: warm light, calm mood, and the prompt is followed.
Final answer: image 2 is better. Reason: the user prefers vivid detail and cool tones here.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.5 0.75 50% #1 #2 (a) (b) [x] {y} "quoted" 'single'.
Punctuation: commas, periods. Questions? Answers! Colons: semicolons; dashes - and slashes / too.
Unicode text: café, naïve, façade, über, 東京, 你好, привет, 😀 and ✓ also appear sometimes.
"""


def _train_backend() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()  # takes no options: it only maps the bytes back
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def build_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    """Train the tiny tokenizer, save it (tokenizer.json + tokenizer_config.json with the chat
    template) into `out_dir`, and return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers' TokenizersBackend.__init__ is unannotated
        tokenizer_object=_train_backend(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        padding_side="left",
        split_special_tokens=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    _inline_chat_template(out_dir)
    return tokenizer


def _inline_chat_template(out_dir: Path) -> None:
    """Keep the chat template in tokenizer_config.json (read by every transformers version), not only
    in chat_template.jinja (what recent versions write)."""
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json(config_path, config)
    jinja = out_dir / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


TEXT_HIDDEN = 64


def _vision_config(kind: TinyKind) -> dict[str, Any]:
    common = {
        "depth": 1,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if kind == "qwen2_vl":
        # embed_dim: the ViT width; hidden_size: what the patch merger outputs (= text hidden size)
        return {
            **common,
            "embed_dim": 32,
            "hidden_size": TEXT_HIDDEN,
            "mlp_ratio": 2,
            "hidden_act": "quick_gelu",
        }
    # Qwen2.5-VL: hidden_size is the ViT width, out_hidden_size what the merger outputs
    return {
        **common,
        "hidden_size": 32,
        "out_hidden_size": TEXT_HIDDEN,
        "intermediate_size": 64,
        "hidden_act": "silu",
        "tokens_per_second": 2,
        "window_size": 112,  # pixels: 8 patches = 4x4 merged tokens per local-attention window
        "fullatt_block_indexes": [0],
    }


def tiny_config(kind: TinyKind, token_ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
    """config.json of a tiny checkpoint, in the flat layout of the published Qwen2(.5)-VL checkpoints.

    Text fields sit at the top level and M-RoPE is given as `rope_scaling: {"type": "mrope", ...}` plus
    `rope_theta`, exactly as on the hub, so the tiny checkpoint takes the same loading path as real ones:
    transformers 4.x reads it as is, 5.x converts it (5.24 builds `text_config.rope_parameters =
    {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], ...}` from it).
    """
    if kind not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown tiny VLM kind {kind!r}; expected 'qwen2_vl' or 'qwen2_5_vl'")
    architecture = (
        "Qwen2VLForConditionalGeneration" if kind == "qwen2_vl" else "Qwen2_5_VLForConditionalGeneration"
    )
    return {
        "architectures": [architecture],
        "model_type": kind,
        "torch_dtype": "float32",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 2,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        # head_dim 64 / 4 = 16 -> 8 rotary frequencies, split (temporal, height, width) = 2 + 3 + 3
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "vision_config": _vision_config(kind),
    }


QWEN2_VL_7B: dict[str, Any] = {  # the released PIGReward checkpoints' shape (Qwen2-VL-7B)
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 3584,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    found = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(found, int)  # one token in, one id out
    return found


def random_model(
    shape: Literal["tiny", "7b"], device: str, workdir: Path
) -> tuple[Any, PreTrainedTokenizerFast]:
    """A Qwen2-VL model of `shape` with random weights (N(0, 0.02)) on `device`, and its tokenizer
    (saved under `workdir`). bf16 on CUDA, fp32 elsewhere."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = build_tokenizer(workdir / "tok")
    ids = {t: _token_id(tokenizer, t) for t in tokenizer.all_special_tokens}
    ids.update(
        {
            t: _token_id(tokenizer, t)
            for t in (
                "<|image_pad|>",
                "<|video_pad|>",
                "<|vision_start|>",
                "<|vision_end|>",
                "<|im_end|>",
                "<|endoftext|>",
            )
        }
    )
    cfg = tiny_config("qwen2_vl", ids, len(tokenizer))
    if shape == "7b":
        cfg.update(QWEN2_VL_7B)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config = Qwen2VLConfig(**cfg)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(  # type: ignore[no-untyped-call]  # transformers: _from_config is unannotated
            config, dtype=dtype
        ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    return model, tokenizer
