"""Rewriters: turn a base prompt, the user's context and what earlier rounds taught into new prompts.

Two kinds:

* `ModifierRewriter` (CPU, deterministic for a seed) appends modifier phrases (`modifiers.MODIFIERS`)
  in the direction the user prefers. Preferences come from the lite context's fitted weights, or, for
  LVLM contexts, from the words of the rationales ("warmer", "muted", "minimal", ...).
* `LLMRewriter` asks a text model (any OpenAI-compatible chat server, SGLang included, through
  `workers.generation.Engine`) for rewrites and tops up with `ModifierRewriter` when it returns fewer
  usable lines than asked.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, Protocol, runtime_checkable

from workers.features import FEATURE_KEYS, FEATURES
from workers.generation import ChatMessage, Engine, GenerationRequest, Sampling, TextPart
from workers.optimization.modifiers import (
    MODIFIERS,
    PHRASE_FEATURE,
    find_modifiers,
    strip_modifiers,
    with_modifiers,
)
from workers.schemas import ContextData


@dataclass(frozen=True)
class Feedback:
    """What a judged candidate taught us.

    `weak_dimensions` are dimension NAMES as the judge wrote them (lite: "Warm palette", "Symmetry";
    LVLM judges: free text such as "Lighting warmth") on which this candidate scored below its opponent.
    """

    prompt: str
    won: bool
    weak_dimensions: tuple[str, ...]
    reasons: tuple[str, ...] = ()


@runtime_checkable
class Rewriter(Protocol):
    name: str

    def propose(
        self,
        base_prompt: str,
        context: ContextData,
        feedback: Sequence[Feedback],
        k: int,
        round_index: int,
        seed: int,
    ) -> list[str]:
        """k DISTINCT rewrites of `base_prompt`, none equal to it."""
        ...


# ------------------------------------------------------------------------------ reading preferences

_SYNONYMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # feature key: (words meaning "more", words meaning "less"); lite's own adjectives come first
    "warmth": (
        ("warmer", "warm", "golden", "amber", "orange", "sunset", "fiery"),
        ("cooler", "cool", "cold", "blue", "bluish", "icy", "teal"),
    ),
    "saturation": (
        ("more saturated", "saturated", "vivid", "vibrant", "rich colours", "rich colors"),
        ("more muted", "muted", "desaturated", "washed out", "washed-out", "pastel", "faded"),
    ),
    "brightness": (
        ("brighter", "bright", "airy", "sunny", "luminous", "well-lit", "high-key"),
        ("darker", "dark", "moody", "dim", "gloomy", "shadowy", "low-key", "nocturnal"),
    ),
    "contrast": (
        ("higher-contrast", "high contrast", "high-contrast", "contrasty", "punchy", "dramatic"),
        ("flatter", "flat", "low contrast", "low-contrast", "soft"),
    ),
    "colourfulness": (
        ("more colourful", "more colorful", "colourful", "colorful", "multicoloured", "multicolored"),
        ("less colourful", "less colorful", "monochrome", "monochromatic", "greyscale", "grayscale"),
    ),
    "detail": (
        ("busier", "busy", "intricate", "detailed", "cluttered", "ornate", "complex"),
        ("sparser", "sparse", "minimal", "minimalist", "uncluttered", "tidy", "clean", "simple"),
    ),
    "symmetry": (
        ("more symmetric", "symmetric", "symmetrical", "balanced", "mirrored"),
        ("less symmetric", "asymmetric", "asymmetrical", "unbalanced", "irregular"),
    ),
    "centre_focus": (
        ("more centred", "more centered", "centred", "centered", "central", "centre focus", "center focus"),
        ("less centred", "less centered", "off-centre", "off-center", "off centre", "off center"),
    ),
}
_WORD_SIGN: dict[str, tuple[str, int]] = {
    word.lower(): (key, sign)
    for key, (more, less) in _SYNONYMS.items()
    for words, sign in ((more, 1), (less, -1))
    for word in words
}
for _phrase, (_key, _sign) in PHRASE_FEATURE.items():
    _WORD_SIGN.setdefault(_phrase.lower(), (_key, _sign))
for _f in FEATURES:
    _WORD_SIGN.setdefault(_f.more.lower(), (_f.key, 1))
    _WORD_SIGN.setdefault(_f.less.lower(), (_f.key, -1))
_WORDS = re.compile(
    r"(?<![\w-])(?:"
    + "|".join(re.escape(w) for w in sorted(_WORD_SIGN, key=len, reverse=True))
    + r")(?![\w-])",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"(?:\b(?:not|no|never|nor|without|avoid\w*|dislik\w*|hat\w*|rejects?|isn't|aren't|doesn't|don't)"
    r"|n't)\s+(?:\w+\s+)?$",
    re.IGNORECASE,
)

_DIMENSION_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("warmth", ("warm", "cool", "temperature", "golden", "amber", "hue")),
    ("saturation", ("saturat", "vivid", "muted", "vibran")),
    ("colourfulness", ("colourful", "colorful", "monochrom", "palette", "colour", "color")),
    ("contrast", ("contrast",)),
    ("brightness", ("bright", "dark", "light", "exposure", "lumin", "mood")),
    ("detail", ("detail", "clutter", "busy", "minimal", "complex", "sparse")),
    ("symmetry", ("symmetr", "balance")),
    ("centre_focus", ("centre", "center", "centred", "centered", "focus", "framing")),
)
_TITLES = {f.title.casefold(): f.key for f in FEATURES}


def dimension_feature(name: str) -> str | None:
    """The lite feature key a judge's dimension name refers to: an exact lite title (any case), the key
    itself, or the first feature whose keywords occur in the name ("Lighting warmth" -> warmth)."""
    folded = " ".join(name.casefold().split())
    if folded in _TITLES:
        return _TITLES[folded]
    if folded.replace(" ", "_") in FEATURE_KEYS:
        return folded.replace(" ", "_")
    for key, keywords in _DIMENSION_KEYWORDS:
        if any(word in folded for word in keywords):
            return key
    return None


def rationale_preferences(rationales: Sequence[str]) -> dict[str, float]:
    """Signed preference per feature from free-text rationales: +1 per "more" word, -1 per "less"
    word (flipped after a negation such as "not" or "dislikes"), divided by the number of rationales."""
    totals = dict.fromkeys(FEATURE_KEYS, 0.0)
    for text in rationales:
        for match in _WORDS.finditer(text):
            key, sign = _WORD_SIGN[match.group(0).lower()]
            if _NEGATION.search(text[max(0, match.start() - 40) : match.start()]):
                sign = -sign
            totals[key] += sign
    n = max(1, len(rationales))
    return {key: value / n for key, value in totals.items()}


def context_preferences(context: ContextData) -> dict[str, float]:
    """Signed weight per lite feature key: lite's fitted Bradley-Terry weights when the payload has
    them, otherwise word counts over the rationales (LVLM contexts)."""
    payload = context.payload or {}
    features, weights = payload.get("features"), payload.get("weights")
    if isinstance(features, list) and isinstance(weights, list) and len(features) == len(weights):
        prefs = dict.fromkeys(FEATURE_KEYS, 0.0)
        for key, weight in zip(features, weights, strict=True):
            if key in prefs and isinstance(weight, int | float) and math.isfinite(weight):
                prefs[key] = float(weight)
        if any(prefs.values()):
            return prefs
    return rationale_preferences(context.rationales)


def _norm(prompt: str) -> str:
    return " ".join(prompt.casefold().split()).rstrip(".")


# ------------------------------------------------------------------------------ modifier rewriter


class ModifierRewriter:
    """Appends 1 to `max_modifiers` modifier phrases in the user's preferred direction.

    Each proposal is `strip_modifiers(base) + ", " + phrases`. A feature's strength is
    |weight| / max |weight|, raised by `boost` for every LOSING candidate of the feedback that was
    weak on it (its dimension names are mapped to feature keys by `dimension_feature`). Features are
    drawn without replacement with probability explore/8 + (1 - explore) * strength^2 / sum(strength^2),
    where explore = `explore` / (1 + round_index); weak features also flip direction with probability
    explore * (1 - strength) / 2. Features with no known direction take a random one. Deterministic
    for (seed, round_index, base prompt, context, feedback).
    """

    name = "modifier"

    def __init__(self, max_modifiers: int = 4, explore: float = 0.3, boost: float = 0.75) -> None:
        if not 1 <= max_modifiers <= len(FEATURE_KEYS):
            raise ValueError(f"max_modifiers must be in [1, {len(FEATURE_KEYS)}], got {max_modifiers}")
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {explore}")
        self.max_modifiers = max_modifiers
        self.explore = explore
        self.boost = boost

    def preferences(self, context: ContextData) -> dict[str, float]:
        return context_preferences(context)

    def strengths(
        self, context: ContextData, feedback: Sequence[Feedback]
    ) -> tuple[dict[str, float], dict[str, int]]:
        """(strength >= 0, direction in {-1, 0, +1}) per feature key, feedback boosts applied."""
        prefs = self.preferences(context)
        top = max(abs(w) for w in prefs.values())
        strength = {k: (abs(w) / top if top > 0 else 0.0) for k, w in prefs.items()}
        direction = {k: (1 if w > 0 else -1 if w < 0 else 0) for k, w in prefs.items()}
        winners: dict[str, int] = dict.fromkeys(FEATURE_KEYS, 0)
        losers: dict[str, int] = dict.fromkeys(FEATURE_KEYS, 0)
        for fb in feedback:
            for phrase in find_modifiers(fb.prompt):
                key, sign = PHRASE_FEATURE[phrase]
                (winners if fb.won else losers)[key] += sign
        for fb in feedback:
            if fb.won:
                continue
            for key in {f for f in map(dimension_feature, fb.weak_dimensions) if f is not None}:
                if direction[key] == 0:  # no preference known: learn it from the judged prompts
                    hint = winners[key] or -losers[key]
                    direction[key] = (hint > 0) - (hint < 0)
                if direction[key] != 0:
                    strength[key] += self.boost
        return strength, direction

    def propose(
        self,
        base_prompt: str,
        context: ContextData,
        feedback: Sequence[Feedback],
        k: int,
        round_index: int,
        seed: int,
    ) -> list[str]:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        rng = random.Random(f"modifier-rewriter:{seed}:{round_index}:{base_prompt}")
        core = strip_modifiers(base_prompt)
        strength, direction = self.strengths(context, feedback)
        explore = self.explore / (1.0 + max(0, round_index))
        keys = list(FEATURE_KEYS)
        squares = {key: strength[key] ** 2 for key in keys}
        total = sum(squares.values())
        weight = {
            key: explore / len(keys)
            + (1.0 - explore) * (squares[key] / total if total > 0 else 1 / len(keys))
            for key in keys
        }
        order = {key: i for i, key in enumerate(sorted(keys, key=lambda x: (-weight[x], keys.index(x))))}

        seen = {_norm(base_prompt)}
        out: list[str] = []

        def add(choice: dict[str, int]) -> None:
            chosen = sorted(choice, key=order.__getitem__)
            phrases = [MODIFIERS[key][0 if choice[key] > 0 else 1] for key in chosen]
            prompt = with_modifiers(core, phrases)
            if _norm(prompt) not in seen:
                seen.add(_norm(prompt))
                out.append(prompt)

        for _ in range(50 * k + 100):
            if len(out) >= k:
                return out
            m = rng.randint(1, self.max_modifiers)
            pool = dict(weight)
            choice: dict[str, int] = {}
            for _ in range(m):
                key = rng.choices(list(pool), weights=list(pool.values()))[0]
                del pool[key]
                sign = direction[key] or rng.choice((1, -1))
                if direction[key] and rng.random() < explore * max(0.0, 1.0 - strength[key]) / 2:
                    sign = -sign
                choice[key] = sign
            add(choice)
        # Rarely reached (k close to the number of combinations): enumerate, preferred directions first.
        ranked = sorted(keys, key=order.__getitem__)
        for flips in range(self.max_modifiers + 1):
            for m in range(1, self.max_modifiers + 1):
                for combo in combinations(ranked, m):
                    for flipped in combinations(list(combo), flips):
                        if len(out) >= k:
                            return out
                        add({key: (direction[key] or 1) * (-1 if key in flipped else 1) for key in combo})
        if len(out) < k:
            raise ValueError(f"cannot make {k} distinct modifier rewrites (at most {len(out)})")
        return out


# ---------------------------------------------------------------------------------- LLM rewriter

SYSTEM = (
    "You rewrite text-to-image prompts for one particular person so that the generated image suits "
    "their taste. Keep the subject and meaning of the prompt; adjust style, lighting, palette, "
    "composition and level of detail to what this person prefers. Each rewrite is a single line."
)
MAX_RATIONALES = 20
MAX_FEEDBACK = 16

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_BULLET = re.compile(
    r"^(?:[-*+•·>]+\s*|\(?\d{1,3}\s*[.):\]]\s*|#\d{1,3}\s*[.:)-]?\s*"
    r"|(?:rewrite|prompt|option|candidate|version)\s*#?\s*\d{0,3}\s*[:.)-]\s*)+",
    re.IGNORECASE,
)
_QUOTES = "\"'`“”‘’«»"


def parse_rewrites(text: str, drop_last: bool = False) -> list[str]:
    """Candidate prompts from a model answer: one per line, with reasoning blocks, numbering,
    bullets, "Rewrite 2:" labels, markdown emphasis and surrounding quotes removed; header lines
    (ending in ':') and empty lines skipped. `drop_last` discards the final line (cut-off answers)."""
    lines = _THINK.sub("", text).splitlines()
    if drop_last and lines:
        lines = lines[:-1]
    out = []
    for line in lines:
        line = line.strip().replace("**", "").replace("__", "")
        line = _BULLET.sub("", line).strip()
        line = line.strip(_QUOTES).strip()
        if not line or line.endswith(":") or line.startswith("```"):
            continue
        out.append(" ".join(line.split()))
    return out


class LLMRewriter:
    """Rewrites from a text model through an `Engine` (e.g. `OpenAIHTTPEngine`, served by SGLang).

    The chat holds the user's rationales, the base prompt and the feedback (preferred / rejected
    candidates with their weak dimensions and reasons), and asks for exactly k rewrites, one per line.
    The answer is parsed by `parse_rewrites`; duplicates (case/whitespace-insensitive) and the base
    prompt are dropped, and the list is topped up with `ModifierRewriter` proposals when fewer than k
    remain (also when the answer is malformed). `role` picks the engine's model: the "judge" model is
    fine (an instruction-tuned LVLM writes prompts well enough), "reasoner" when a separate text model
    is configured. Sampling defaults to temperature 0.8 / top-p 0.95; its seed is always replaced by
    one derived from (seed, round_index), so a seeded server answers repeatably. Engine errors
    (`BackendUnavailable`, `BackendRejected`) propagate.
    """

    name = "llm"

    def __init__(
        self,
        engine: Engine,
        sampling: Sampling | None = None,
        role: Literal["judge", "reasoner"] = "judge",
        fallback: ModifierRewriter | None = None,
    ) -> None:
        self.engine = engine
        self.sampling = sampling or Sampling(temperature=0.8, top_p=0.95, max_tokens=1024)
        self.role = role
        self.fallback = fallback or ModifierRewriter()

    def messages(
        self, base_prompt: str, context: ContextData, feedback: Sequence[Feedback], k: int
    ) -> tuple[ChatMessage, ...]:
        parts = []
        rationales = [r.strip() for r in context.rationales if r.strip()][:MAX_RATIONALES]
        if rationales:
            parts.append(
                "What this person's past choices between images show:\n"
                + "\n".join(f"{i}. {r}" for i, r in enumerate(rationales, 1))
            )
        parts.append(f"Prompt to rewrite: {base_prompt.strip()}")
        recent = list(feedback)[-MAX_FEEDBACK:]
        if recent:
            lines = []
            for fb in recent:
                verdict = "PREFERRED by this person" if fb.won else "REJECTED by this person"
                line = f'- "{fb.prompt}": {verdict}'
                if fb.weak_dimensions:
                    line += f"; weaker on: {', '.join(fb.weak_dimensions)}"
                if fb.reasons:
                    line += f"; why: {' '.join(r.strip() for r in fb.reasons)}"
                lines.append(line)
            parts.append(
                "Earlier rewrites, turned into images and judged for this person:\n"
                + "\n".join(lines)
                + "\nKeep what the preferred ones did; fix what the rejected ones were weaker on."
            )
        parts.append(
            f"Write exactly {k} different rewrites of the prompt, one per line. "
            "No numbering, no quotes, no explanations, nothing else."
        )
        return (
            ChatMessage("system", (TextPart(SYSTEM),)),
            ChatMessage("user", (TextPart("\n\n".join(parts)),)),
        )

    def propose(
        self,
        base_prompt: str,
        context: ContextData,
        feedback: Sequence[Feedback],
        k: int,
        round_index: int,
        seed: int,
    ) -> list[str]:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if k == 0:
            return []
        sampling = self.sampling.model_copy(update={"seed": (seed * 1_000_003 + round_index) % 2**31})
        request = GenerationRequest(
            messages=self.messages(base_prompt, context, feedback, k), sampling=sampling, role=self.role
        )
        generation = self.engine.generate([request])[0]
        lines = (
            []
            if generation.finish_reason == "malformed"
            else parse_rewrites(generation.text, drop_last=generation.finish_reason == "length")
        )
        seen = {_norm(base_prompt)}
        out: list[str] = []
        for line in lines:
            if _norm(line) not in seen and len(out) < k:
                seen.add(_norm(line))
                out.append(line)
        if len(out) < k:
            # at most len(out) of these collide with the model's lines, so k + len(out) always suffice
            for prompt in self.fallback.propose(
                base_prompt, context, feedback, k + len(out), round_index, seed
            ):
                if len(out) >= k:
                    break
                if _norm(prompt) not in seen:
                    seen.add(_norm(prompt))
                    out.append(prompt)
        return out
