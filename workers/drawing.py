"""The procedural image drawer: pictures whose pixels measurably encode six attributes.

`draw_image(DrawParams(...))` renders warmth, saturation, brightness, clutter, centering and symmetry
into an RGB picture, deterministically for the parameters and the layout seed. Two things use it: the
`procedural` image generator of prompt optimization (a CPU stand-in for a diffusion model whose
ground truth is known) and the synthetic users of the demo and the benchmarks (`pigreward.synthetic`),
whose hidden tastes are defined on these attributes, never on a feature extractor.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

ATTRIBUTES: tuple[str, ...] = ("warmth", "saturation", "brightness", "clutter", "centering", "symmetry")

_MAX_CLUTTER = 60
# Chroma directions in the (Cb, Cr) plane: azure blue -> (violet, magenta, red) -> orange. Along
# this arc R-B grows monotonically, and luminance is set separately, so warmth, saturation and
# brightness stay (nearly) independent in pixels.
_THETA_COOL = math.atan2(-0.447, 0.894)
_THETA_WARM = math.atan2(0.8, -0.6)

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class DrawParams(BaseModel, frozen=True):
    """Everything needed to redraw one image: the six attributes (in [0, 1]) plus a layout seed."""

    warmth: Unit
    saturation: Unit
    brightness: Unit
    clutter: Unit
    centering: Unit
    symmetry: Unit
    seed: int = Field(ge=0, description="Layout randomness (shape positions, sizes, jitter).")

    def vector(self) -> np.ndarray:
        """The attributes in ATTRIBUTES order, so tastes can be applied as a dot product."""
        return np.array([getattr(self, a) for a in ATTRIBUTES], dtype=np.float64)


def _ycc_to_rgb(lum: np.ndarray | float, chroma: float, theta: float) -> np.ndarray:
    """RGB in [0, 1] from luminance, chroma and hue angle (BT.601 YCbCr), so the three are independent."""
    cb = chroma * math.cos(theta)
    cr = chroma * math.sin(theta)
    lum = np.asarray(lum, dtype=np.float64)[..., None]
    rgb = lum + np.array([1.402 * cr, -0.344136 * cb - 0.714136 * cr, 1.772 * cb])
    clipped: np.ndarray = np.clip(rgb, 0.0, 1.0)
    return clipped


def _color(lum: float, chroma: float, theta: float) -> tuple[int, int, int]:
    r, g, b = (int(round(255.0 * c)) for c in _ycc_to_rgb(float(np.clip(lum, 0.0, 1.0)), chroma, theta))
    return (r, g, b)


def draw_image(params: DrawParams, size: int = 256) -> Image.Image:
    """Draw an RGB image whose pixels measurably encode each attribute of `params`.

    warmth -> hue (blue/cyan ... orange/red), saturation -> chroma, brightness -> luminance
    0.15..0.95, clutter -> 1..60 small shapes and lines, centering -> a big subject at the centre
    with empty borders (1) vs pushed to a corner with detail everywhere (0), symmetry -> blend
    towards the subject's half mirrored onto the other half. All layout randomness comes from `params.seed`
    and is drawn in a fixed amount, so changing one attribute never reshuffles the layout.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    rng = np.random.default_rng(params.seed)
    s = float(size)
    lum = 0.15 + 0.8 * params.brightness
    chroma = 0.015 + 0.27 * params.saturation
    theta = _THETA_COOL + (_THETA_WARM - _THETA_COOL) * params.warmth
    cen = params.centering

    # Layout randomness, always the same number of draws.
    grad_angle = rng.uniform(0.0, 2.0 * math.pi)
    bg_jitter = rng.uniform(-0.1, 0.1)
    corner = 0.12 + 0.76 * rng.integers(0, 2, size=2) + rng.uniform(-0.04, 0.04, size=2)
    subj_r = rng.uniform(0.22, 0.28) * s
    aspect = math.sqrt(rng.uniform(0.8, 1.25))
    subj_sign = float(rng.choice([-1.0, 1.0]))
    acc_dx = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.6, 0.9)
    acc_dy = rng.uniform(-0.5, 0.5)
    acc_r = rng.uniform(0.35, 0.5) * subj_r
    kinds = rng.integers(0, 4, size=_MAX_CLUTTER)
    uniform_pos = rng.uniform(0.0, 1.0, size=(_MAX_CLUTTER, 2))
    central_pos = 0.5 + 0.12 * rng.standard_normal(size=(_MAX_CLUTTER, 2))
    extents = rng.uniform(0.015, 0.06, size=(_MAX_CLUTTER, 2)) * s
    d_lum = rng.uniform(-0.3, 0.3, size=_MAX_CLUTTER)
    d_chroma = rng.uniform(0.6, 1.2, size=_MAX_CLUTTER)
    d_theta = rng.uniform(-0.15, 0.15, size=_MAX_CLUTTER)
    angles = rng.uniform(0.0, 2.0 * math.pi, size=_MAX_CLUTTER)
    widths = rng.integers(1, 4, size=_MAX_CLUTTER) * max(1, size // 256)

    # Background: a luminance gradient in the palette hue, in an arbitrary (asymmetric) direction.
    ax = (np.arange(size, dtype=np.float64) + 0.5) / s - 0.5
    t = ax[None, :] * math.cos(grad_angle) + ax[:, None] * math.sin(grad_angle)
    background = _ycc_to_rgb(lum + 0.18 * t, 0.8 * chroma, theta + bg_jitter)
    img = Image.fromarray(np.rint(background * 255.0).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    # Main subject: a big ellipse with an off-axis accent (so a centred subject is still asymmetric).
    cx, cy = (corner + cen * (0.5 - corner)) * s
    rx, ry = subj_r * aspect, subj_r / aspect
    subj_lum = lum + 0.32 * subj_sign
    draw.ellipse(
        (cx - rx, cy - ry, cx + rx, cy + ry),
        fill=_color(subj_lum, 1.15 * chroma, theta),
        outline=_color(0.6 * subj_lum, chroma, theta),
        width=max(1, size // 128),
    )
    ax_, ay_ = cx + acc_dx * rx, cy + acc_dy * ry
    draw.ellipse(
        (ax_ - acc_r, ay_ - acc_r, ax_ + acc_r, ay_ + acc_r),
        fill=_color(lum + 0.18 * subj_sign, chroma, theta + 0.12),
    )

    # Clutter: small shapes and lines; centred compositions keep them near the middle.
    n_clutter = 1 + int(round((_MAX_CLUTTER - 1) * params.clutter))
    pos = np.clip((1.0 - cen) * uniform_pos + cen * central_pos, 0.0, 1.0) * s
    for i in range(n_clutter):
        x, y = pos[i]
        w, h = extents[i]
        color = _color(lum + d_lum[i], chroma * d_chroma[i], theta + d_theta[i])
        kind = kinds[i]
        if kind == 0:
            draw.ellipse((x - w, y - h, x + w, y + h), fill=color)
        elif kind == 1:
            draw.rectangle((x - w, y - h, x + w, y + h), fill=color)
        elif kind == 2:
            length = 3.0 * w
            end = (x + length * math.cos(angles[i]), y + length * math.sin(angles[i]))
            draw.line(((x, y), end), fill=color, width=int(widths[i]))
        else:
            pts = [
                (x + w * math.cos(angles[i] + k * 2.0944), y + w * math.sin(angles[i] + k * 2.0944))
                for k in range(3)
            ]
            draw.polygon(pts, fill=color)

    # Symmetry: blend towards a mirrored copy of the half holding the subject (exact mirror at 1).
    arr = np.asarray(img, dtype=np.float64)
    if params.symmetry > 0.0:
        half = size // 2
        mirrored = arr.copy()
        if cx < s / 2:
            mirrored[:, size - half :] = arr[:, :half][:, ::-1]
        else:
            mirrored[:, :half] = arr[:, size - half :][:, ::-1]
        arr = arr + params.symmetry * (mirrored - arr)
    return Image.fromarray(np.rint(arr).astype(np.uint8))
