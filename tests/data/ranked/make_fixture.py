"""Regenerate this fixture: a tiny ranked-images folder in PIGBench's layout (run once, files committed).

    python tests/data/ranked/make_fixture.py

6 prompts x 4 images (32 px, drawn by workers.drawing.draw_image), ranked by 3 simulated users
with hidden tastes; each user holds some prompts as reference items and the others as test items.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pigreward.synthetic import utility
from workers.drawing import ATTRIBUTES, DrawParams, draw_image

HERE = Path(__file__).resolve().parent
PROMPTS = (
    "Times Square at night",
    "a quiet harbour at dawn",
    "a mountain village in winter",
    "a bowl of fruit on a table",
    "a lighthouse in a storm",
    "a garden after the rain",
)
USERS = {
    "alice": ({"warmth": 2.5, "saturation": 1.0}, {"reference": [0, 1, 2, 3], "test": [4, 5]}),
    "bob": ({"warmth": -2.5, "brightness": 1.0}, {"reference": [0, 1, 2], "test": [3, 4, 5]}),
    "carol": ({"clutter": 2.5, "centering": -1.0}, {"reference": [1, 2, 3, 4], "test": [0, 5]}),
}


def main() -> None:
    rng = np.random.default_rng(7)
    (HERE / "images").mkdir(exist_ok=True)
    params: dict[str, DrawParams] = {}
    for p in range(len(PROMPTS)):
        for i in range(4):
            name = f"images/p{p}_{i}.png"
            attrs = dict(zip(ATTRIBUTES, (float(v) for v in rng.uniform(0, 1, len(ATTRIBUTES))), strict=True))
            params[name] = DrawParams(seed=int(rng.integers(0, 2**31)), **attrs)
            draw_image(params[name], size=32).save(HERE / name, format="PNG", optimize=True)
    lines = []
    for user, (taste, splits) in USERS.items():
        items = sorted((p, split) for split, prompts in splits.items() for p in prompts)
        for p, split in items:
            images = [f"images/p{p}_{i}.png" for i in range(4)]
            ranking = sorted(range(4), key=lambda i: -utility(taste, params[images[i]]))
            lines.append(
                json.dumps(
                    {"user": user, "prompt": PROMPTS[p], "images": images, "ranking": ranking, "split": split}
                )
            )
    (HERE / "rankings.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
