"""workers.backends.qwen_vision: equal to transformers' Qwen2-VL image processor (PIL backend)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    smart_resize as hf_smart_resize,
)

from workers.backends.qwen_vision import (
    VisionSpec,
    expand_image_pads,
    image_token_count,
    mm_token_type_ids,
    preprocess,
    smart_resize,
)

DEFAULT = VisionSpec()


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + 7919 * width + height)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(data[..., 0] if channels == 1 else data, mode)


def _gradient(width: int, height: int) -> Image.Image:
    """Smooth content: bicubic ringing and rounding differ most on edges, noise is the harder case,
    but smooth images catch channel/axis mix-ups (a transposed noise image looks like noise)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _processor(spec: VisionSpec) -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        patch_size=spec.patch_size,
        merge_size=spec.merge_size,
        temporal_patch_size=spec.temporal_patch_size,
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
    )


def _assert_same_as_hf(
    images: list[Image.Image], spec: VisionSpec = DEFAULT
) -> tuple[torch.Tensor, torch.Tensor]:
    expected = _processor(spec)(images=images, return_tensors="pt")
    pixel_values, grid_thw = preprocess(images, spec)
    assert pixel_values.dtype == torch.float32
    assert grid_thw.dtype == torch.int64
    assert grid_thw.shape == (len(images), 3)
    assert torch.equal(grid_thw, expected["image_grid_thw"])
    assert pixel_values.shape == expected["pixel_values"].shape
    assert pixel_values.shape[1] == spec.patch_dim
    assert torch.allclose(pixel_values, expected["pixel_values"].float(), atol=1e-5, rtol=0)
    return pixel_values, grid_thw


# ---- smart_resize -----------------------------------------------------------------------------


def test_smart_resize_keeps_exact_multiples() -> None:
    assert smart_resize(224, 224, 28, 3136, 1003520) == (224, 224)
    assert smart_resize(56, 28 * 40, 28, 3136, 1003520) == (56, 1120)


def test_smart_resize_rounds_to_nearest_multiple_half_to_even() -> None:
    assert smart_resize(100, 100, 28, 3136, 1003520) == (112, 112)  # 3.57 -> 4
    assert smart_resize(90, 90, 28, 3136, 1003520) == (84, 84)  # 3.21 -> 3
    # Python's round(): 2.5 -> 2 and 3.5 -> 4, exactly like transformers
    assert smart_resize(70, 98, 28, 3136, 1003520) == (56, 112)


def test_smart_resize_scales_up_tiny_images_to_min_pixels() -> None:
    assert smart_resize(10, 10, 28, 3136, 1003520) == (56, 56)
    assert smart_resize(1, 1, 28, 3136, 1003520) == (56, 56)
    # a side that would round to 0 is scaled up, not collapsed
    h, w = smart_resize(5, 500, 28, 3136, 1003520)
    assert (h, w) == (28, 560)
    assert h * w >= 3136


def test_smart_resize_scales_down_large_images_to_max_pixels() -> None:
    h, w = smart_resize(2000, 3000, 28, 3136, 1003520)
    assert (h, w) == (812, 1204)
    assert h * w <= 1003520
    assert h % 28 == 0 and w % 28 == 0
    h, w = smart_resize(4000, 4000, 28, 3136, 200704)
    assert (h, w) == (448, 448)


def test_smart_resize_aspect_ratio_limit() -> None:
    assert smart_resize(1, 200, 28, 3136, 1003520)[0] % 28 == 0  # exactly 200 is allowed
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 201, 28, 3136, 1003520)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10_000, 49, 28, 3136, 1003520)


@pytest.mark.parametrize(("height", "width"), [(0, 10), (10, 0), (-5, 10)])
def test_smart_resize_rejects_empty_sides(height: int, width: int) -> None:
    with pytest.raises(ValueError):
        smart_resize(height, width, 28, 3136, 1003520)


def test_smart_resize_matches_transformers_on_a_grid() -> None:
    sides = [1, 2, 13, 14, 27, 28, 29, 41, 42, 55, 56, 70, 99, 100, 223, 224, 225, 333, 480, 640, 1000, 1023]
    sides += [1080, 1920, 2000, 3000, 4096]
    for min_pixels, max_pixels in [(3136, 1003520), (3136, 200704), (56 * 56, 56 * 56 * 4)]:
        for factor in (28, 32):
            for h in sides:
                for w in sides:
                    try:
                        expected = hf_smart_resize(
                            h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
                        )
                    except ValueError:
                        with pytest.raises(ValueError):
                            smart_resize(h, w, factor, min_pixels, max_pixels)
                        continue
                    got = smart_resize(h, w, factor, min_pixels, max_pixels)
                    assert got == expected, (h, w, factor, min_pixels, max_pixels)
                    assert got[0] % factor == 0 and got[1] % factor == 0
                    if max(h, w) / min(h, w) <= 4:  # else a side may be clamped up to `factor`
                        assert min_pixels <= got[0] * got[1] <= max(max_pixels, factor * factor)


# ---- preprocess == transformers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (10, 10),  # tiny: below min_pixels, scaled up to 56x56
        (5, 300),  # thin: one side rounds to zero
        (224, 224),  # exact multiples: no change of size
        (640, 480),  # landscape
        (333, 57),  # odd sizes, portrait-ish after rounding
        (480, 1000),  # portrait
        (3000, 2000),  # large: above max_pixels, scaled down
    ],
)
def test_preprocess_matches_transformers(width: int, height: int) -> None:
    image = _noise(width, height)
    pixel_values, grid = _assert_same_as_hf([image])
    h, w = smart_resize(height, width, 28, DEFAULT.min_pixels, DEFAULT.max_pixels)
    assert grid.tolist() == [[1, h // 14, w // 14]]
    assert pixel_values.shape == (h * w // 196, 3 * 2 * 14 * 14)


def test_preprocess_matches_transformers_on_smooth_images() -> None:
    _assert_same_as_hf([_gradient(300, 200), _gradient(97, 411)])


def test_preprocess_batch_concatenates_in_order() -> None:
    images = [_noise(10, 10), _noise(640, 480), _gradient(200, 300), _noise(3000, 2000)]
    pixel_values, grid = _assert_same_as_hf(images)
    counts = [int(t * h * w) for t, h, w in grid.tolist()]
    assert sum(counts) == pixel_values.shape[0]
    # each image's block equals preprocessing it alone
    start = 0
    for image, count in zip(images, counts, strict=True):
        alone, _ = preprocess([image], DEFAULT)
        assert torch.equal(pixel_values[start : start + count], alone)
        start += count


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_preprocess_other_modes_match_transformers(mode: str) -> None:
    base = _noise(120, 90, "RGBA")
    if mode == "RGBA":
        image = base
    elif mode == "L":
        image = _noise(120, 90, "L")
    elif mode == "LA":
        image = base.convert("LA")
    else:
        image = base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
        image.info["transparency"] = 0
    _assert_same_as_hf([image])


def test_transparency_is_flattened_on_white() -> None:
    clear = Image.new("RGBA", (56, 56), (0, 0, 0, 0))
    white = Image.new("RGB", (56, 56), (255, 255, 255))
    assert torch.equal(preprocess([clear], DEFAULT)[0], preprocess([white], DEFAULT)[0])


def test_preprocess_custom_spec_matches_transformers() -> None:
    spec = VisionSpec(
        patch_size=7,
        merge_size=3,
        temporal_patch_size=1,
        min_pixels=1000,
        max_pixels=30000,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
    )
    _assert_same_as_hf([_noise(300, 100), _noise(7, 7), _gradient(50, 60)], spec)


def test_patch_layout_is_merge_window_order() -> None:
    """A 56x56 image = 4x4 patches = 2x2 merge windows; patches come window by window."""
    spec = VisionSpec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    arr = np.zeros((56, 56, 3), dtype=np.uint8)
    for r in range(4):
        for c in range(4):
            arr[r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14, 0] = 10 * (4 * r + c)
    pixel_values, grid = preprocess([Image.fromarray(arr)], spec)
    assert grid.tolist() == [[1, 4, 4]]
    red = pixel_values.view(16, 3, 2, 14, 14)[:, 0, 0, 0, 0] * 255
    order = [round(v / 10) for v in red.tolist()]
    # window (0,0): patches (0,0) (0,1) (1,0) (1,1); then window (0,1): (0,2) (0,3) (1,2) (1,3) ...
    assert order == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    # the frame is repeated along the temporal axis
    frames = pixel_values.view(16, 3, 2, 14, 14)
    assert torch.equal(frames[:, :, 0], frames[:, :, 1])


def test_preprocess_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        preprocess([], DEFAULT)
    with pytest.raises(TypeError):
        preprocess([np.zeros((10, 10, 3), dtype=np.uint8)], DEFAULT)  # type: ignore[list-item]


# ---- VisionSpec -------------------------------------------------------------------------------


def _write(directory: Path, name: str, data: dict) -> None:
    (directory / name).write_text(json.dumps(data), encoding="utf-8")


def test_spec_defaults_without_files(tmp_path: Path) -> None:
    assert VisionSpec.from_pretrained_dir(tmp_path) == VisionSpec()
    assert VisionSpec().factor == 28
    assert VisionSpec().patch_dim == 1176


def test_spec_reads_legacy_min_max_pixels(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "preprocessor_config.json",
        {
            "image_processor_type": "Qwen2VLImageProcessor",
            "min_pixels": 3136,
            "max_pixels": 12845056,
            "patch_size": 14,
            "merge_size": 2,
            "temporal_patch_size": 2,
            "image_mean": [0.1, 0.2, 0.3],
            "image_std": [0.4, 0.5, 0.6],
        },
    )
    spec = VisionSpec.from_pretrained_dir(tmp_path)
    assert spec == VisionSpec(max_pixels=12845056, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))


def test_spec_reads_size_dict_and_explicit_values_win(tmp_path: Path) -> None:
    _write(tmp_path, "preprocessor_config.json", {"size": {"shortest_edge": 1000, "longest_edge": 50000}})
    assert VisionSpec.from_pretrained_dir(tmp_path) == VisionSpec(min_pixels=1000, max_pixels=50000)
    _write(tmp_path, "preprocessor_config.json", {"size": {"min_pixels": 2000, "max_pixels": 60000}})
    assert VisionSpec.from_pretrained_dir(tmp_path) == VisionSpec(min_pixels=2000, max_pixels=60000)
    # as in transformers' __init__: explicit min_pixels/max_pixels override `size`
    _write(
        tmp_path,
        "preprocessor_config.json",
        {"size": {"shortest_edge": 1000, "longest_edge": 50000}, "max_pixels": 70000},
    )
    assert VisionSpec.from_pretrained_dir(tmp_path) == VisionSpec(min_pixels=1000, max_pixels=70000)


def test_spec_falls_back_to_processor_and_model_config(tmp_path: Path) -> None:
    _write(tmp_path, "processor_config.json", {"image_processor": {"size": {"longest_edge": 40000}}})
    _write(
        tmp_path,
        "config.json",
        {"vision_config": {"patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2}},
    )
    assert VisionSpec.from_pretrained_dir(tmp_path) == VisionSpec(patch_size=16, max_pixels=40000)


def test_spec_from_dir_agrees_with_transformers_from_pretrained(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "preprocessor_config.json",
        {
            "image_processor_type": "Qwen2VLImageProcessor",
            "min_pixels": 3136,
            "max_pixels": 200704,
            "size": {"shortest_edge": 3136, "longest_edge": 200704},
            "patch_size": 14,
            "merge_size": 2,
            "temporal_patch_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        },
    )
    spec = VisionSpec.from_pretrained_dir(tmp_path)
    assert spec.max_pixels == 200704
    hf = Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path), local_files_only=True)
    images = [_noise(3000, 2000), _noise(20, 30)]
    expected = hf(images=images, return_tensors="pt")
    pixel_values, grid = preprocess(images, spec)
    assert torch.equal(grid, expected["image_grid_thw"])
    assert torch.allclose(pixel_values, expected["pixel_values"], atol=1e-5, rtol=0)


def test_spec_validates() -> None:
    with pytest.raises(ValueError):
        VisionSpec(patch_size=0)
    with pytest.raises(ValueError):
        VisionSpec(min_pixels=10, max_pixels=5)
    with pytest.raises(ValueError):
        VisionSpec(std=(0.1, 0.0, 0.1))


# ---- token counts and prompt helpers --------------------------------------------------------


def test_image_token_count() -> None:
    assert image_token_count([1, 4, 6], 2) == 6
    assert image_token_count(torch.tensor([1, 58, 86]), 2) == 58 * 86 // 4
    assert image_token_count((2, 4, 4), 1) == 32
    _, grid = preprocess([_noise(640, 480), _noise(10, 10)], DEFAULT)
    assert [image_token_count(g, 2) for g in grid] == [34 * 46 // 4, 4]
    with pytest.raises(ValueError):
        image_token_count([4, 4], 2)
    with pytest.raises(ValueError):
        image_token_count(grid, 2)  # a batch of grids is not one grid


def test_hf_token_count_agrees() -> None:
    hf = Qwen2VLImageProcessorPil()
    for width, height in [(640, 480), (10, 10), (3000, 2000)]:
        _, grid = preprocess([_noise(width, height)], DEFAULT)
        patches = hf.get_number_of_image_patches(height, width)
        assert image_token_count(grid[0], 2) == patches // 4


def test_expand_image_pads() -> None:
    pad = "<|image_pad|>"
    text = f"a<|vision_start|>{pad}<|vision_end|>b<|vision_start|>{pad}<|vision_end|>c"
    grid = torch.tensor([[1, 4, 6], [1, 2, 2]])
    out = expand_image_pads(text, grid, 2)
    assert out == f"a<|vision_start|>{pad * 6}<|vision_end|>b<|vision_start|>{pad}<|vision_end|>c"
    with pytest.raises(ValueError, match="placeholders"):
        expand_image_pads(text, grid[:1], 2)


def test_mm_token_type_ids() -> None:
    ids = torch.tensor([[0, 5, 5, 1, 6], [5, 2, 3, 4, 6]])
    types = mm_token_type_ids(ids, image_token_id=5, video_token_id=6)
    assert types.tolist() == [[0, 1, 1, 0, 2], [1, 0, 0, 0, 2]]
    assert types.dtype == torch.int32
    assert mm_token_type_ids(ids, image_token_id=5).tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 0, 0]]


def test_large_image_stays_within_budget() -> None:
    pixel_values, grid = preprocess([_noise(4000, 3000)], DEFAULT)
    t, h, w = grid[0].tolist()
    assert h * w * 14 * 14 <= DEFAULT.max_pixels
    assert math.isclose(w / h, 4 / 3, rel_tol=0.05)
    assert pixel_values.shape[0] == t * h * w
