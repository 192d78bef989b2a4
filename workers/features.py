"""Interpretable image statistics: the `lite` backend's evaluation dimensions.

Each feature is a number roughly in [0, 1] computed from pixels alone (a 128-px thumbnail), with a
name a person understands and words for "more" and "less" that rationales use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Feature:
    key: str
    title: str
    more: str  # adjective for a higher value ("warmer")
    less: str  # adjective for a lower value ("cooler")


FEATURES: tuple[Feature, ...] = (
    Feature("warmth", "Warm palette", "warmer", "cooler"),
    Feature("saturation", "Saturation", "more saturated", "more muted"),
    Feature("brightness", "Brightness", "brighter", "darker"),
    Feature("contrast", "Contrast", "higher-contrast", "flatter"),
    Feature("colourfulness", "Colourfulness", "more colourful", "less colourful"),
    Feature("detail", "Detail and clutter", "busier", "sparser"),
    Feature("symmetry", "Symmetry", "more symmetric", "less symmetric"),
    Feature("centre_focus", "Centre focus", "more centred", "less centred"),
)
FEATURE_KEYS = tuple(f.key for f in FEATURES)
THUMB = 128


def extract(image: Image.Image) -> np.ndarray:
    """The feature vector (len(FEATURES),) of an RGB image."""
    thumb = image.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    rgb = np.asarray(thumb, dtype=np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cmax, cmin = rgb.max(axis=-1), rgb.min(axis=-1)
    sat = np.where(cmax > 1e-6, (cmax - cmin) / np.maximum(cmax, 1e-6), 0.0)
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    gy, gx = np.gradient(luma)
    grad = np.hypot(gx, gy)
    q = THUMB // 4
    centre = grad[q:-q, q:-q].mean()
    border_mask = np.ones_like(grad, dtype=bool)
    border_mask[q:-q, q:-q] = False
    border = grad[border_mask].mean()
    values = {
        "warmth": 0.5 + 0.5 * float((r - b).mean()),
        "saturation": float(sat.mean()),
        "brightness": float(luma.mean()),
        "contrast": float(min(1.0, luma.std() * 2.5)),
        "colourfulness": float(min(1.0, colourfulness * 1.5)),
        "detail": float(min(1.0, grad.mean() * 8.0)),
        "symmetry": float(1.0 - min(1.0, np.abs(rgb - rgb[:, ::-1]).mean() * 3.0)),
        "centre_focus": float(centre / (centre + border + 1e-6)),
    }
    return np.array([values[k] for k in FEATURE_KEYS], dtype=np.float64)
