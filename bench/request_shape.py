"""Request shape: how much of a user's judge requests is a byte-identical shared prefix, and how many
image tokens a judgment costs.

SGLang's RadixAttention reuses the KV cache of any byte-identical prompt prefix, so the judge template
puts the instructions and the user's context (one rationale per reference pair) before the target
prompt and the images. This builds the real requests — `workers.protocols.get_protocol(name)
.judge_request(...)` for `pigreward-v1` and `json-v1` — for several users x several judgments with a
realistic context (5-15 rationales of 60-80 words), encodes their messages exactly as the HTTP engine
sends them (`OpenAIHTTPEngine._message`: OpenAI chat content parts, images as PNG data URLs; nothing
is sent), and measures per user the longest common prefix of the serialized messages
(`json.dumps(messages)`) of all that user's requests:

- text fraction: prefix / request length with every image data URL removed (the URL string emptied,
  the surrounding JSON kept) — the goal (>= 90%) is about this one;
- with images: the same prefix over the full serialized request, data URLs (base64 PNG) included;
- token view (estimate): prefix text tokens / (text tokens + image tokens), text tokens estimated at
  4 characters per token (no Qwen tokenizer offline), image tokens exact (below).

Image tokens per judgment: each image is normalized like the pipeline does (`workers.imaging`:
at most `pixel_budget` pixels, default 448x448), then sized as Qwen2-VL does
(`workers.backends.qwen_vision.smart_resize`, factor 28) and counted with `image_token_count`.

    python -m bench.request_shape                    # 6 users x 16 judgments, both orders
    python -m bench.request_shape --users 10 --judgments 32 --no-swap
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHARS_PER_TOKEN = 4.0  # English BPE text, an estimate (Qwen2's tokenizer is not available offline)

_LIKES = (
    "warm amber light",
    "soft, diffuse morning light",
    "saturated, confident colour",
    "muted, earthy tones",
    "a single clear subject in the centre",
    "generous empty space around the subject",
    "dense, detailed scenes that reward a second look",
    "symmetrical, calm compositions",
    "a strong sense of depth",
    "crisp fine detail in textures",
    "a painterly rather than photographic finish",
    "cool blue evening palettes",
)
_DISLIKES = (
    "harsh midday contrast",
    "cluttered foregrounds",
    "oversaturated neon colour",
    "subjects pushed against the frame edge",
    "flat, evenly lit scenes",
    "visible artefacts in faces and hands",
    "busy backgrounds that compete with the subject",
    "washed-out, greyish colour",
)
_CLAUSES = (
    "The chosen image {verb} {like}, while the rejected one {verb2} {dislike}.",
    "This user again favours {like} over {dislike}, even when the prompt does not ask for it.",
    "Prompt fidelity was similar in both, so the decision rests on {like}.",
    "The rejected image is technically sharper, but it {verb2} {dislike}, which this user penalises.",
    "Overall the user seems to read {like} as a sign of quality and {dislike} as a flaw.",
    "Small differences in {like} outweigh larger differences in resolution for this user.",
    "Both images follow the prompt; the chosen one {verb} {like} and avoids {dislike}.",
)


def rationale(rng: random.Random, prompt: str, likes: Sequence[str], dislikes: Sequence[str]) -> str:
    """One reference pair's rationale, 60-80 words of whole sentences, in this user's terms."""
    opening = f"For '{prompt}', the user preferred the first image."
    while True:
        words = opening.split()
        while len(words) < 60:
            words += (
                rng.choice(_CLAUSES)
                .format(
                    verb=rng.choice(("shows", "has", "keeps")),
                    verb2=rng.choice(("shows", "has", "suffers from")),
                    like=rng.choice(likes),
                    dislike=rng.choice(dislikes),
                )
                .split()
            )
        if len(words) <= 80:
            return " ".join(words)


def make_images(n: int, size: int, seed: int) -> list[Any]:
    """n normalized images (as the pipeline makes them) from `draw_image` PNGs of size x size."""
    import numpy as np

    from workers.drawing import ATTRIBUTES, DrawParams, draw_image
    from workers.imaging import ImageLimits, normalize

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = draw_image(DrawParams(**{a: float(rng.random()) for a in ATTRIBUTES}, seed=seed + i), size=size)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(normalize(buf.getvalue(), f"s3://bench/img{i}.png", ImageLimits()))
    return out


def common_prefix(texts: Sequence[str]) -> int:
    first, last = min(texts), max(texts)  # the LCP of all equals the LCP of the extremes
    n = 0
    for a, b in zip(first, last, strict=False):
        if a != b:
            break
        n += 1
    return n


def _strip_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [
                {**c, "image_url": {**c["image_url"], "url": ""}} if c.get("type") == "image_url" else c
                for c in content
            ]
        out.append({**m, "content": content})
    return out


def image_tokens(width: int, height: int) -> int:
    from workers.backends.qwen_vision import VisionSpec, image_token_count, smart_resize

    spec = VisionSpec()
    h, w = smart_resize(height, width, spec.factor, spec.min_pixels, spec.max_pixels)
    return image_token_count((1, h // spec.patch_size, w // spec.patch_size), spec.merge_size)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--judgments", type=int, default=16, help="judgments per user")
    p.add_argument("--no-swap", action="store_true", help="one order per judgment (default: both)")
    p.add_argument("--image-size", type=int, default=512, help="side of the drawn source images")
    p.add_argument("--protocols", default="pigreward-v1,json-v1")
    args = p.parse_args(argv)

    from PIL import Image

    from pigreward.synthetic import PROMPTS
    from workers.backends.openai_http import HTTPEngineConfig, OpenAIHTTPEngine
    from workers.generation import Sampling
    from workers.imaging import ImageLimits, _fit_budget
    from workers.protocols import get_protocol

    rng = random.Random(0)
    images = make_images(2 * args.judgments, args.image_size, seed=100)
    engine = OpenAIHTTPEngine(HTTPEngineConfig(judge_url="http://127.0.0.1:9"))  # never called
    sampling = Sampling(max_tokens=512)
    counts = [5 + round(10 * u / max(1, args.users - 1)) for u in range(args.users)]  # 5..15
    users = []
    for u, n_refs in enumerate(counts):
        likes = rng.sample(_LIKES, 3)
        dislikes = rng.sample(_DISLIKES, 3)
        refs = [rationale(rng, PROMPTS[(u + r) % len(PROMPTS)], likes, dislikes) for r in range(n_refs)]
        prompts = [f"{PROMPTS[(u * 7 + j) % len(PROMPTS)]}, variation {j}" for j in range(args.judgments)]
        users.append((f"user{u}", refs, prompts))

    orders = 1 if args.no_swap else 2
    print("== pigreward request shape (judge requests as the HTTP engine encodes them; nothing sent) ==")
    print(
        f"settings: {args.users} users x {args.judgments} judgments x {orders} order(s); contexts of "
        f"{counts[0]}-{counts[-1]} rationales, 60-80 words each; images: {args.image_size}x{args.image_size} "
        f"PNG (draw_image), normalized to the pixel budget {ImageLimits().pixel_budget} px; text tokens "
        f"estimated at {CHARS_PER_TOKEN:g} chars/token"
    )
    summary: list[str] = []
    for name in [x.strip() for x in args.protocols.split(",") if x.strip()]:
        protocol = get_protocol(name)
        print()
        print(f"[{name}]  ({protocol.version})")
        print(
            f"  {'user':7s} {'refs':>4s} {'words':>5s} {'req chars':>9s} {'prefix':>7s} {'text %':>7s} "
            f"{'w/ images %':>11s} {'tok prefix':>10s} {'tok total':>9s} {'token %':>7s}"
        )
        fractions, token_fractions = [], []
        divergence = ""
        for user, refs, prompts in users:
            texts, fulls = [], []
            for j, prompt in enumerate(prompts):
                a, b = images[2 * j], images[2 * j + 1]
                for first, second in [(a, b), (b, a)][:orders]:
                    request = protocol.judge_request(refs, prompt, first, second, sampling)
                    messages = [engine._message(m) for m in request.messages]
                    texts.append(json.dumps(_strip_images(messages)))
                    fulls.append(json.dumps(messages))
            prefix = common_prefix(texts)
            assert fulls[0][:prefix] == texts[0][:prefix]  # the shared part holds no image
            text_len = sum(map(len, texts)) / len(texts)
            full_len = sum(map(len, fulls)) / len(fulls)
            frac = prefix / text_len
            img_tok = 2 * image_tokens(images[0].image.width, images[0].image.height)
            tok_prefix = prefix / CHARS_PER_TOKEN
            tok_total = text_len / CHARS_PER_TOKEN + img_tok
            fractions.append(frac)
            token_fractions.append(tok_prefix / tok_total)
            words = sum(len(r.split()) for r in refs)
            print(
                f"  {user:7s} {len(refs):4d} {words:5d} {text_len:9.0f} {prefix:7d} {100 * frac:6.1f}% "
                f"{100 * prefix / full_len:10.1f}% {tok_prefix:10.0f} {tok_total:9.0f} "
                f"{100 * tok_prefix / tok_total:6.1f}%"
            )
            divergence = texts[0][max(0, prefix - 60) : prefix] + " | " + texts[0][prefix : prefix + 20]
        print(f"  where the shared prefix ends (at ' | '): ...{divergence!r}")
        worst = min(fractions)
        print(
            f"  shared prefix, text (data URLs removed): min {100 * worst:.1f}%, mean "
            f"{100 * sum(fractions) / len(fractions):.1f}% (goal >= 90%: {'MET' if worst >= 0.9 else 'NOT MET'})"
        )
        print(
            f"  shared prefix, tokens with images (estimate): min {100 * min(token_fractions):.1f}%, mean "
            f"{100 * sum(token_fractions) / len(token_fractions):.1f}%"
        )
        summary.append(
            f"SUMMARY {name}: shared prefix per user (text, data URLs removed) min {100 * worst:.1f}% "
            f"mean {100 * sum(fractions) / len(fractions):.1f}% (goal >= 90%: "
            f"{'MET' if worst >= 0.9 else 'NOT MET'}); with image tokens (est.) min "
            f"{100 * min(token_fractions):.1f}% mean {100 * sum(token_fractions) / len(token_fractions):.1f}%"
        )
    engine.close()

    print()
    print("[image tokens, Qwen2-VL (patch 14, merge 2, factor 28), after the pipeline's pixel budget]")
    budget = ImageLimits().pixel_budget
    for w, h in [(512, 512), (1024, 1024), (1024, 576), (768, 1344), (448, 448), (256, 256)]:
        nw, nh = _fit_budget(Image.new("RGB", (w, h)), budget).size
        tokens = image_tokens(nw, nh)
        print(
            f"  source {w}x{h} -> normalized {nw}x{nh} -> {tokens} tokens per image, {2 * tokens} per request"
        )
    per_image = image_tokens(images[0].image.width, images[0].image.height)
    print()
    print("== summary ==")
    for line in summary:
        print(line)
    print(
        f"SUMMARY image tokens: {per_image} per image ({args.image_size}x{args.image_size} source -> "
        f"{images[0].image.width}x{images[0].image.height}), {2 * per_image} per request, "
        f"{2 * per_image * orders} per judgment with {orders} order(s) (budget {budget} px = 448x448 -> 256/image)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
