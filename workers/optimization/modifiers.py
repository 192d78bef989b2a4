"""The shared vocabulary of prompt optimization: one "more" and one "less" phrase per lite feature.

Rewriters append these phrases to a prompt to push an image along a dimension the user cares about;
the procedural generator reads them back (`parse_modifiers`) and draws the image accordingly, so the
whole rewrite -> image -> judgment loop can be exercised on a CPU with a known ground truth.

`DRAW_TARGETS` maps each phrase to the `pigreward.synthetic` drawing attribute it sets and the value
it sets it to. Contrast has no drawing attribute (no synthetic attribute moves the lite contrast
feature), so its phrases are understood by rewriters and text-to-image models but ignored by the
procedural generator; colourfulness phrases drive the saturation attribute (chroma), which is what
the colourfulness feature measures on drawn images.
"""

from __future__ import annotations

import re

from workers.features import FEATURE_KEYS

HIGH = 0.9
"""Attribute value a "more" phrase asks for."""
LOW = 0.1
"""Attribute value a "less" phrase asks for."""

MODIFIERS: dict[str, tuple[str, str]] = {
    "warmth": ("warm golden light", "cool blue tones"),
    "saturation": ("vivid saturated colors", "muted desaturated colors"),
    "brightness": ("bright airy lighting", "dark moody lighting"),
    "contrast": ("high contrast", "soft low contrast"),
    "colourfulness": ("colorful palette", "monochrome palette"),
    "detail": ("intricate busy details", "minimal uncluttered scene"),
    "symmetry": ("symmetrical composition", "asymmetric composition"),
    "centre_focus": ("centered subject", "off-center subject"),
}
assert tuple(MODIFIERS) == FEATURE_KEYS, "MODIFIERS must cover workers.features.FEATURE_KEYS in order"

_ATTRIBUTE_OF: dict[str, str | None] = {
    "warmth": "warmth",
    "saturation": "saturation",
    "brightness": "brightness",
    "contrast": None,
    "colourfulness": "saturation",
    "detail": "clutter",
    "symmetry": "symmetry",
    "centre_focus": "centering",
}

DRAW_TARGETS: dict[str, tuple[str, float]] = {
    phrase: (attribute, target)
    for key, attribute in _ATTRIBUTE_OF.items()
    if attribute is not None
    for phrase, target in zip(MODIFIERS[key], (HIGH, LOW), strict=True)
}

PHRASE_FEATURE: dict[str, tuple[str, int]] = {
    phrase: (key, sign) for key, pair in MODIFIERS.items() for phrase, sign in zip(pair, (1, -1), strict=True)
}
"""Every modifier phrase -> (lite feature key, +1 for "more" / -1 for "less")."""


def _phrase_pattern(phrases: list[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive, longest phrase first; spaces and hyphens match any run of them."""
    alternatives = []
    for phrase in sorted(phrases, key=len, reverse=True):
        words = re.split(r"[\s-]+", phrase.strip())
        alternatives.append(r"[\s-]+".join(re.escape(w) for w in words))
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


_PATTERN = _phrase_pattern(list(PHRASE_FEATURE))
_CANONICAL = {re.sub(r"[\s-]+", " ", p.lower()): p for p in PHRASE_FEATURE}
_SEPARATOR = re.compile(r"(\s*[,;]\s*)")
_CONNECTIVES = r"(?:and|with|plus|in|under|&)"
_MARK = re.compile(r"(?:(?<![\w-])" + _CONNECTIVES + r"\s+)?\x00", re.IGNORECASE)
_DANGLING = re.compile(
    r"^(?:(?:and|with|plus|&)(?:\s+|$))+|(?:(?:^|\s+)" + _CONNECTIVES + r")+$", re.IGNORECASE
)


def canonical_phrase(text: str) -> str | None:
    """The MODIFIERS phrase `text` spells (any case, hyphen/space variants), or None."""
    return _CANONICAL.get(re.sub(r"[\s-]+", " ", text.strip().lower()))


def find_modifiers(prompt: str) -> list[str]:
    """The modifier phrases in `prompt`, canonical spelling, in order of appearance (repeats kept)."""
    found = []
    for match in _PATTERN.finditer(prompt):
        phrase = canonical_phrase(match.group(0))
        if phrase is not None:
            found.append(phrase)
    return found


def parse_modifiers(prompt: str) -> dict[str, float]:
    """Synthetic attribute -> target value from the phrases in `prompt`; a later phrase wins.

    Phrases without a drawing attribute (contrast) are ignored.
    """
    targets: dict[str, float] = {}
    for phrase in find_modifiers(prompt):
        if phrase in DRAW_TARGETS:
            attribute, target = DRAW_TARGETS[phrase]
            targets.pop(attribute, None)  # re-insert so the dict's order follows the prompt
            targets[attribute] = target
    return targets


def strip_modifiers(prompt: str) -> str:
    """`prompt` without modifier phrases: emptied comma/semicolon segments and the separators around
    them are dropped, as is a connective just before a phrase ("with", "and", "in") or left dangling. A prompt without
    modifiers comes back unchanged apart from surrounding whitespace."""
    if not _PATTERN.search(prompt):
        return prompt.strip()
    marked = _PATTERN.sub("\x00", prompt)
    pieces = _SEPARATOR.split(marked)
    segments, separators = pieces[0::2], [""] + pieces[1::2]
    kept: list[tuple[str, str]] = []
    for separator, segment in zip(separators, segments, strict=True):
        if "\x00" in segment:
            segment = re.sub(r"\s+", " ", _MARK.sub(" ", segment)).strip()
            segment = _DANGLING.sub("", segment).strip()
        else:
            segment = segment.strip()
        if segment:
            kept.append((separator.strip() + " ", segment))
    if not kept:
        return ""
    return kept[0][1] + "".join(sep + seg for sep, seg in kept[1:])


def with_modifiers(core: str, phrases: list[str]) -> str:
    """`core` followed by the phrases, comma-separated (just the phrases when `core` is empty)."""
    return ", ".join([core.strip(), *phrases] if core.strip() else phrases)
