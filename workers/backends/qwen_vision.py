"""Qwen2-VL / Qwen2.5-VL image preprocessing, by hand (numpy + PIL + torch).

Reproduces transformers' Qwen2-VL image processor (the PIL backend, `Qwen2VLImageProcessorPil` in
transformers 5.x, the "slow" `Qwen2VLImageProcessor` in 4.x) bit for bit, so the LVLM backends do not
depend on processor classes whose names, backends (torchvision) and defaults move between transformers
versions. Qwen2.5-VL uses the same image processor.

Per image:

1. convert to RGB, compositing any transparency onto white;
2. resize with PIL BICUBIC to `smart_resize(h, w, patch_size * merge_size, min_pixels, max_pixels)`;
3. rescale by 1/255 (computed in float64, stored as float32), normalize with mean/std in float32;
4. repeat the frame `temporal_patch_size` times and cut it into `patch_size` patches, ordered by
   `merge_size x merge_size` merge window (rows of windows, then rows/cols inside each window), each
   patch flattened as (channel, temporal, patch_row, patch_col).

`pixel_values` of all images are concatenated along the patch axis; `image_grid_thw[i] = (1, H/p, W/p)`.
Image i occupies `image_token_count(image_grid_thw[i], merge_size)` `<|image_pad|>` tokens in the prompt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is the `lvlm` extra's: token budgets (image_tokens) work without it
    import torch

__all__ = [
    "VisionSpec",
    "expand_image_pads",
    "image_token_count",
    "mm_token_type_ids",
    "preprocess",
    "smart_resize",
]

IMAGE_PAD = "<|image_pad|>"
MAX_ASPECT_RATIO = 200
RESCALE_FACTOR = 1 / 255


@dataclass(frozen=True)
class VisionSpec:
    """What the image processor of a checkpoint does; the defaults are Qwen2-VL's (and Qwen2.5-VL's)."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self) -> None:
        for name in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VisionSpec.{name} must be a positive int, got {value!r}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"VisionSpec.{name} needs 3 values (RGB), got {value!r}")
        if any(s == 0 for s in self.std):
            raise ValueError(f"VisionSpec.std must not contain 0, got {self.std!r}")

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this (one merged token covers factor x factor pixels)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one row of `pixel_values`."""
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

    @classmethod
    def from_pretrained_dir(cls, path: Path | str) -> VisionSpec:
        """The spec of a local checkpoint directory.

        Reads `preprocessor_config.json` (or, failing that, the `image_processor` section of
        `processor_config.json`), using transformers' precedence: explicit `min_pixels`/`max_pixels`
        override `size` (`{"shortest_edge", "longest_edge"}`, or the old `{"min_pixels", "max_pixels"}`).
        Patch/merge/temporal sizes missing there are taken from `config.json`'s `vision_config`.
        Anything still missing keeps the default.
        """
        path = Path(path)
        proc = _read_json(path / "preprocessor_config.json")
        if proc is None:
            proc = (_read_json(path / "processor_config.json") or {}).get("image_processor") or {}
        vision = (_read_json(path / "config.json") or {}).get("vision_config") or {}

        kwargs: dict[str, Any] = {}
        for key, vision_key in (
            ("patch_size", "patch_size"),
            ("merge_size", "spatial_merge_size"),
            ("temporal_patch_size", "temporal_patch_size"),
        ):
            value = proc.get(key, vision.get(vision_key))
            if value is not None:
                kwargs[key] = _as_int(value, key)

        size = proc.get("size") or {}
        if not isinstance(size, dict):
            raise ValueError(f"{path}: preprocessor `size` must be a dict, got {size!r}")
        min_pixels = proc.get("min_pixels", size.get("shortest_edge", size.get("min_pixels")))
        max_pixels = proc.get("max_pixels", size.get("longest_edge", size.get("max_pixels")))
        if min_pixels is not None:
            kwargs["min_pixels"] = _as_int(min_pixels, "min_pixels")
        if max_pixels is not None:
            kwargs["max_pixels"] = _as_int(max_pixels, "max_pixels")

        for key, attr in (("image_mean", "mean"), ("image_std", "std")):
            value = proc.get(key)
            if value is None:
                continue
            if isinstance(value, int | float):
                value = [value] * 3
            kwargs[attr] = tuple(float(v) for v in value)
        return cls(**kwargs)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, list | tuple):  # e.g. patch_size [14, 14]: square patches only
        if len(set(value)) != 1:
            raise ValueError(f"{name}: only square sizes are supported, got {value!r}")
        value = value[0]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after Qwen2-VL's resize: both multiples of `factor`, area within
    [min_pixels, max_pixels] where possible, aspect ratio kept as closely as possible.

    Same arithmetic as transformers (Python's round-half-to-even included). Raises ValueError for
    non-positive sides or an aspect ratio above 200, like transformers.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image sides must be positive, got {height}x{width}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited onto white (as transformers' convert_to_rgb)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _patchify(image: np.ndarray, spec: VisionSpec) -> tuple[np.ndarray, int, int]:
    """(C, H, W) float32 -> ((H/p)*(W/p), C*T*p*p) in merge-window order, plus the patch grid."""
    channels, height, width = image.shape
    p, m, t = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    grid_h, grid_w = height // p, width // p
    patches = image.reshape(channels, grid_h // m, m, p, grid_w // m, m, p)
    # -> (window row, window col, row in window, col in window, C, patch row, patch col)
    patches = patches.transpose(1, 4, 2, 5, 0, 3, 6)
    # the still image is its own temporal neighbour: repeat it T times between C and the patch pixels
    patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], t, p, p))
    return patches.reshape(grid_h * grid_w, channels * t * p * p), grid_h, grid_w


def preprocess(images: Sequence[Image.Image], spec: VisionSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """`pixel_values` float32 (total_patches, 3*T*p*p) and `image_grid_thw` int64 (n_images, 3)."""
    import torch

    if isinstance(images, Image.Image):
        images = [images]
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    all_patches: list[np.ndarray] = []
    grids: list[list[int]] = []
    for image in images:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected PIL.Image.Image, got {type(image).__name__}")
        rgb = _to_rgb(image)
        height, width = smart_resize(rgb.height, rgb.width, spec.factor, spec.min_pixels, spec.max_pixels)
        resized = rgb.resize((width, height), resample=Image.Resampling.BICUBIC)
        pixels = np.asarray(resized)  # (H, W, 3) uint8
        scaled = (pixels.astype(np.float64) * RESCALE_FACTOR).astype(np.float32)
        normalized = (scaled - mean) / std  # float32, channels last
        patches, grid_h, grid_w = _patchify(np.ascontiguousarray(normalized.transpose(2, 0, 1)), spec)
        all_patches.append(patches)
        grids.append([1, grid_h, grid_w])
    pixel_values = torch.from_numpy(np.concatenate(all_patches, axis=0))
    return pixel_values, torch.tensor(grids, dtype=torch.int64)


def image_tokens(width: int, height: int, spec: VisionSpec) -> int:
    """`<|image_pad|>` tokens for an image of this size, without touching its pixels (token budgets)."""
    h, w = smart_resize(height, width, spec.factor, spec.min_pixels, spec.max_pixels)
    return (h // spec.patch_size) * (w // spec.patch_size) // (spec.merge_size**2)


def image_token_count(grid_thw: torch.Tensor | Sequence[int], merge_size: int) -> int:
    """How many `<|image_pad|>` tokens stand for an image of this (t, h, w) patch grid."""
    values = grid_thw.tolist() if hasattr(grid_thw, "tolist") else list(grid_thw)
    if len(values) != 3 or not all(isinstance(v, int) for v in values):
        raise ValueError(f"grid_thw must be three ints (t, h, w), got {grid_thw!r}")
    t, h, w = values
    return t * h * w // (merge_size**2)


def expand_image_pads(
    text: str, image_grid_thw: torch.Tensor | Sequence[Sequence[int]], merge_size: int, pad: str = IMAGE_PAD
) -> str:
    """Replace the i-th `pad` in a rendered chat by `image_token_count(image_grid_thw[i])` copies of it.

    Raises ValueError if the number of pads in `text` differs from the number of images.
    """
    grids = list(image_grid_thw)
    pieces = text.split(pad)
    if len(pieces) - 1 != len(grids):
        raise ValueError(f"text has {len(pieces) - 1} {pad} placeholders but {len(grids)} images were given")
    out = [pieces[0]]
    for grid, piece in zip(grids, pieces[1:], strict=True):
        out.append(pad * image_token_count(grid, merge_size))
        out.append(piece)
    return "".join(out)


def mm_token_type_ids(
    input_ids: torch.Tensor, image_token_id: int, video_token_id: int | None = None
) -> torch.Tensor:
    """Modality of each token as transformers 5.x Qwen-VL models expect it: 0 text, 1 image, 2 video.

    transformers >= 5 needs this (`mm_token_type_ids=`) next to `image_grid_thw` to compute M-RoPE
    positions; the processor classes return it, hand-built inputs must supply it.
    """
    import torch

    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == image_token_id] = 1
    if video_token_id is not None:
        types[input_ids == video_token_id] = 2
    return types
