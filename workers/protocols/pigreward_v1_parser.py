"""Strict parser for the released PIGReward judge's text output (protocol `pigreward-v1`).

The judge writes one line per evaluation dimension, then the two totals, then the verdict::

    Warm palette: Image 1 glows with amber light the user favours; Image 2 is cold blue. (Score 1: 4, Score 2: 2)
    Minimal clutter: both keep the scene sparse. (Score 1: 3, Score 2: 3)
    Soft focus: Image 2 has the dreamy blur this user picked twice. (Score 1: 1, Score 2: 4)
    Score 1: 4+3+1=8
    Score 2: 2+3+4=9
    Image 2 is better

Accepted forms:

- Dimension line: ``name: reason (Score 1: a, Score 2: b)``, optionally after a list marker (``1.``,
  ``2)``, ``-``, ``*``, a bullet, ``+``), with the name plain, ``**bold**:``, ``**bold:**``,
  ``*italic*:`` or ``__bold__:``. The name ends at the first colon that is followed by whitespace;
  a colon not followed by whitespace belongs to the name (``Aspect 16:9: wide frame`` is the name
  ``Aspect 16:9``), and later colons belong to the reason (``Colour: warm tones: ...`` is the name
  ``Colour`` with the reason ``warm tones: ...``). A line with no colon followed by whitespace has no
  name (``malformed_scores``).
- Scores are on the 1-5 scale, whole or decimal (``4``, ``4.5``), and may be written ``x/5``
  (``4/5`` is 4). Any other denominator (``3/4``, ``7/10``) is ``malformed_scores``; a score below 1
  or above 5 (``0``, ``5.5``, ``6/5``, ``-1``) is ``score_out_of_range``. A minus sign is read as
  part of a dimension score, so a negative score is out of range, not malformed.
- Totals: ``Score 1: 4+3+1=8`` (spaces around ``+``/``=`` allowed), or the plain ``Score 1: 8``, with
  decimals allowed (``Score 1: 4.5+3+1=8.5``), an optional ``Total`` before ``score`` and bold
  markers (``**Score 1:** 8``). Both totals may be on one line, separated by ``,``, ``;``, ``|`` or
  whitespace (``Score 1: 4+3+1=8, Score 2: 2+3+4=9``, ``Score 1: 8 | Score 2: 9``), optionally
  after a ``Total:``/``Totals:`` label; such a line must carry both images' totals. Totals are sums,
  not range-checked, never fractions (``Score 1: 8/15`` is ``malformed_scores``) and never negative.
  A sum must list the dimension scores in order, and numbers are compared after rounding to 3
  decimals.

A verdict is never guessed. The checks run in a fixed order and the first failure wins:

1. ``empty``        blank text
2. ``truncated``    the generation hit its token limit (``finish_reason == "length"``), whatever the text
3. ``repetition``   a looping generation: a block of 1-4 lines 3+ times in a row (bare ``Score N: ...``
                    lines compared without their numbers), the same prose line 3+ times anywhere, or a
                    phrase of 8+ characters looping 3+ times inside one line
4. ``placeholder``  template slots instead of numbers (``Score 1: total``, ``(Score 1: N, Score 2: M)``,
                    ``<score>``, ``[score]``, ``Score 1: ?``, ``Image X is better``...)
5. structure, in this order: ``malformed_scores``, ``score_out_of_range`` (a dimension score outside
   1-5), ``no_dimensions``, ``missing_totals``, ``totals_mismatch``, ``missing_verdict``,
   ``contradicting_verdicts``, ``verdict_mismatch``.

An invalid result always has ``winner=None`` and a one-sentence ``detail``; for structural failures the
dimensions and totals read so far are kept for diagnosis only (out-of-range dimensions included).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

ParseReason = Literal[
    "empty",
    "truncated",
    "repetition",
    "placeholder",
    "no_dimensions",
    "malformed_scores",
    "score_out_of_range",
    "missing_totals",
    "totals_mismatch",
    "missing_verdict",
    "contradicting_verdicts",
    "verdict_mismatch",
]

Winner = Literal["1", "2", "tie"]

MIN_SCORE = 1.0  # the judge's scale is 1-5 per dimension
MAX_SCORE = 5.0
SCORE_DENOMINATOR = 5  # "4/5" is read as 4; any other denominator is malformed
MAX_NAME_LEN = 80


class ParsedDimension(BaseModel):
    name: str
    reason: str
    score_1: float
    score_2: float


class ParsedJudgment(BaseModel):
    outcome: Literal["valid", "invalid"]
    reason: ParseReason | None = None  # machine-readable, None when valid
    detail: str | None = None  # one human sentence: what exactly was wrong (line number / text)
    dimensions: list[ParsedDimension] = []
    total_1: float | None = None
    total_2: float | None = None
    winner: Winner | None = None  # None whenever invalid
    preamble: str = ""  # free text before the first dimension line, if any


# --------------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------------

_FLAGS = re.IGNORECASE

# "1. ", "2) ", "- ", "* ", "• ", "+ " before a dimension or totals line.
_MARKER = r"(?:(?:\d{1,2}[.)]|[-*\u2022+])\s+)?"

# A number as the judge writes it: "4", "4.5". Dimension scores may carry a sign ("-1" is read, and is
# out of range) and a denominator ("4/5"); totals may not.
_NUM = r"\d{1,4}(?:\.\d{1,4})?"
_SCORE = r"[-\u2212]?" + _NUM

# A name character: anything but a colon followed by whitespace (that colon ends the name).
_NAME_CH = r"(?:[^:\n]|:(?!\s))"

# name: reason (Score 1: a, Score 2: b)   -- name plain, **bold**:, **bold:**, *italic*: or __bold__:
# The name ends at the first colon followed by whitespace ("Aspect 16:9: wide" is the name "Aspect 16:9").
_DIM_RE = re.compile(
    r"^" + _MARKER + r"(?:"
    r"(?P<w1>\*\*|__|\*|_)(?P<n1>[^\s:*_](?:" + _NAME_CH + r"*?[^\s:*_])?)(?P=w1)\s*:"
    r"|(?P<w2>\*\*|__|\*|_)(?P<n2>[^\s:*_](?:" + _NAME_CH + r"*?[^\s:*_])?)\s*:\s*(?P=w2)"
    r"|(?P<n3>[^\s:*](?:" + _NAME_CH + r"*?[^\s:])?)\s*:"
    r")\s+(?P<reason>.*?)\s*"
    r"\(\s*score\s*1\s*[:=]\s*(?P<s1>" + _SCORE + r")(?:\s*/\s*(?P<d1>\d{1,4}))?"
    r"\s*[,;]\s*score\s*2\s*[:=]\s*(?P<s2>" + _SCORE + r")(?:\s*/\s*(?P<d2>\d{1,4}))?\s*\)"
    r"\s*\.?$",
    _FLAGS,
)

# One total: Score 1: 4+3+1=8 | Score 1: 4 + 3 + 1 = 8 | Score 1: 8 | **Score 1:** 8 | Total score 1: 8.5
_BOLD = r"(?:\*\*|__)?"


def _total_segment(suffix: str) -> str:
    expr = rf"{_NUM}(?:\s*\+\s*{_NUM})*(?:\s*=\s*{_NUM})?"
    return (
        rf"{_BOLD}\s*(?:total\s+)?score\s*(?P<img{suffix}>[12])\s*{_BOLD}\s*[:=]\s*{_BOLD}"
        rf"\s*(?P<expr{suffix}>{expr})\s*{_BOLD}"
    )


_TOTAL_RE = re.compile(rf"^{_MARKER}{_total_segment('')}\s*\.?$", _FLAGS)

# Both totals on one line: "Score 1: 8, Score 2: 9", "Score 1: 8; Score 2: 9", "Score 1: 8 | Score 2: 9",
# "Score 1: 8  Score 2: 9", optionally after a "Total:"/"Totals:" label.
_TOTALS_LABEL = rf"(?:{_BOLD}\s*totals?\s*{_BOLD}\s*:\s*{_BOLD}\s*)?"
_TOTALS_PAIR_RE = re.compile(
    rf"^{_MARKER}{_TOTALS_LABEL}{_total_segment('')}(?:\s*[,;|]\s*|\s+){_total_segment('_b')}\s*\.?$",
    _FLAGS,
)

# A line that ends like a dimension line, whatever comes before ("... (Score 1: 4, Score 2: 2).").
_PAIR_TAIL = re.compile(r"\(\s*score\s*1\s*[:=][^()\n]*score\s*2\s*[:=][^()\n]*\)\s*\.?$", _FLAGS)

# "8/15" in a line that starts like a totals line: totals are never fractions.
_FRACTION = re.compile(r"\d\s*/\s*\d")

# Any mention of "Score 1"/"Score 2" (not "score 1-4", the scale).
_SCORE_MENTION = re.compile(r"\bscore\s*[12](?!\d)(?!\s*[-\u2013]\s*\d)", _FLAGS)

# A line that starts like a bare score line ("Score 1: ...", "(Score 2: 8)", "**Score 1**: ...").
_SCORE_LINE_START = re.compile(r"^[\W_]*score\s*[12](?!\d)", _FLAGS)

# ---- placeholders ----------------------------------------------------------------------------------

# The value slot after "Score N:" up to the next ',', ';', ')' or end of line.
# (It also stops before the next "Score N", for one-line totals such as "Score 1: X  Score 2: Y".)
_SLOT = re.compile(
    r"\bscore\s*[12](?!\d)\s*[:=]\s*(?P<slot>(?:(?!\bscore\s*[12](?!\d))[^,;|)\n])*)"
    r"(?P<end>[,;|)]|$|(?=\bscore\s*[12](?!\d)))",
    _FLAGS | re.M,
)
_PLACEHOLDER_TERM = re.compile(
    r"(?:[a-z]|[a-z]_?\d|total|sum|score|value|number|num|int|integer|tbd|n/?a|none|null"
    r"|\?+|_+|-+|\u2014|\u2013|\.{2,}|\u2026|\#+|<[^<>]*>|\[[^\[\]]*\]|\{[^{}]*\})",
    _FLAGS,
)
_BRACKET_PLACEHOLDER = re.compile(
    r"[<\[{]\s*(?:"
    r"(?:score|total|sum|number|num|int|integer|value|reason|rationale|explanation|dimension|criterion"
    r"|aspect|name|winner|verdict|answer)(?![a-z])[^<>\[\]{}\n]{0,40}"
    r"|image\s*(?:[12nx])?\s*(?:or|/)\s*(?:image\s*)?[12nx]?[^<>\[\]{}\n]{0,20}"
    r"|[12]\s*(?:or|/)\s*[12]"
    r"|[a-z]|\.{2,}|\u2026|_+|\?+"
    r")\s*[>\]}]",
    _FLAGS,
)
_IMAGE_PLACEHOLDER = re.compile(r"\bimage\s+(?:x|n|\?+|\#|_+)(?![a-z0-9])\s*(?:is|wins)\b", _FLAGS)

# ---- verdicts --------------------------------------------------------------------------------------

_LABEL = re.compile(
    r"^(?:the\s+)?(?:final\s+)?(?:verdict|answer|decision|conclusion|result|judge?ment|choice|output|summary"
    r"|winner|preference|preferred)\s*[:\-\u2013\u2014]\s*",
    _FLAGS,
)
_CONNECTOR = re.compile(
    r"^(?:(?:therefore|thus|so|hence|overall|consequently|finally|accordingly|in\s+conclusion"
    r"|in\s+summary|to\s+conclude|in\s+total|all\s+in\s+all|as\s+a\s+result|ultimately|on\s+balance"
    r"|in\s+the\s+end|summing\s+up|to\s+sum\s+up|all\s+things\s+considered)\b\s*[,:]?\s*"
    r"|based\s+on\s+[^,]{1,60},\s*"
    r"|with\s+(?:a\s+|the\s+)?(?:higher|larger|greater|bigger|equal|the\s+same)\s+[^,]{1,60},\s*)",
    _FLAGS,
)
_WIN_HEAD = (
    r"image\s*(?P<n>[12])\s+(?:"
    r"is\s+(?:the\s+)?(?:clearly\s+|slightly\s+|much\s+|marginally\s+|overall\s+)?"
    r"(?:better|preferred|superior|more\s+preferred|preferable|favou?red|winner|winning\s+image)"
    r"(?:\s+(?:one|image|choice|option|match))?"
    r"|wins)"
)
_WIN_HEAD2 = (
    r"(?:(?:the\s+)?(?:final\s+)?(?:winner|better\s+image|preferred\s+image|better\s+one|preferred\s+one"
    r"|winning\s+image|answer|verdict|choice)\s+is|(?:i|the\s+user|this\s+user)\s+(?:would\s+)?prefers?)\s+image\s*(?P<n2>[12])"
)
_TIE_HEAD = (
    r"(?P<tie>(?:(?:it'?s|it\s+is|this\s+is|that'?s)\s+)?(?:a\s+)?(?:tie|draw)"
    r"|(?:both\s+images|the\s+two\s+images|the\s+images|both|they)\s+are\s+(?:tied|equal"
    r"|equally\s+(?:good|preferred|matched|strong|suitable|appealing|aligned|favou?red|preferable|liked))"
    r"|(?:both\s+images|the\s+two\s+images|the\s+images|they)\s+(?:tie|draw)"
    r"|neither\s+(?:image\s+)?is\s+better"
    r"|no\s+(?:clear\s+)?winner)"
)
_TAIL = (
    r"(?:\s*\([^()\n]*\))?"  # "Image 2 is better (11 vs 8)."
    r"(?:[\s,;:]+(?:overall|for\s+(?:this|the)\s+user|because|since|as|given|due\s+to|thanks\s+to"
    r"|according\s+to|based\s+on|suited|aligned|in\s+this\s+(?:comparison|case|pair)|here)\b.*)?"
)
_STRONG_VERDICT = re.compile(
    r"^(?:"
    + _WIN_HEAD
    + r"(?:\s+than\s+image\s*(?P<m>[12]))?|"
    + _WIN_HEAD2
    + r"|"
    + _TIE_HEAD
    + r")"
    + _TAIL
    + r"[\s.!]*$",
    _FLAGS,
)
# After a label ("Verdict:", "Final answer:"), a bare "Image 2" is a verdict too.
_BARE_IMAGE = re.compile(r"^image\s*(?P<n>[12])[\s.!]*$", _FLAGS)

# Verdict phrases anywhere in a line (to catch contradictions in free text and in verdict lines).
_LOOSE_END = (
    r"(?=\s*(?:[.!,;:(]|$)|\s+(?:than\s+image|overall|for\s+(?:this|the)\s+user|because|since|as|given"
    r"|due\s+to|thanks\s+to|according|based|suited|aligned|but|and|so|then|here|while|whereas)\b)"
)
_LOOSE_WIN = re.compile(
    r"(?<![a-z])(?<!whether\s)(?<!if\s)(?<!which\s)(?:" + _WIN_HEAD + r"|" + _WIN_HEAD2 + r")" + _LOOSE_END,
    _FLAGS,
)
_LOOSE_TIE = re.compile(
    r"(?<![a-z])(?:(?:it'?s|it\s+is|this\s+is|that'?s)\s+a\s+(?:tie|draw)"
    r"|(?:both\s+images|the\s+two\s+images|the\s+images)\s+are\s+(?:tied|equally\s+(?:good|preferred))"
    r"|neither\s+(?:image\s+)?is\s+better)" + _LOOSE_END,
    _FLAGS,
)

# Chat end-of-turn tokens some servers leave at the end of the text.
_END_TOKENS = re.compile(r"(?:\s*(?:<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|</s>))+\s*\Z")

# ---- repetition ------------------------------------------------------------------------------------

_ALNUM = re.compile(r"[^\W_]")
_INLINE_LOOP = re.compile(r"(.{8,200}?)\1{2,}", re.DOTALL)
_TWO_LETTERS = re.compile(r"[a-z].*[a-z]", _FLAGS | re.DOTALL)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _snip(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: float) -> str:
    """A number for a message: at most 3 decimals, no trailing zeros, no '.0' on whole numbers."""
    text = f"{round(value, 3):.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _close(a: float, b: float) -> bool:
    """Equal for the judge's purposes: the same after rounding to 3 decimals."""
    return abs(round(a, 3) - round(b, 3)) < 1e-6


def _num(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def _norm(line: str) -> str:
    return " ".join(line.split()).casefold()


def _invalid(reason: ParseReason, detail: str, **partial: Any) -> ParsedJudgment:
    return ParsedJudgment(outcome="invalid", reason=reason, detail=detail, winner=None, **partial)


def _describe(direction: str) -> str:
    return "a tie" if direction == "tie" else f"Image {direction} is better"


def _loop_key(text: str) -> str:
    """A normalised line for loop detection: bare score lines lose their numbers ("score 1: #+#=#")."""
    if _SCORE_LINE_START.match(text):
        colon = text.find(":")
        if colon >= 0:
            return text[: colon + 1] + re.sub(r"\d+", "#", text[colon + 1 :])
    return text


def _find_repetition(lines: list[str]) -> str | None:
    """A description of the first repetition loop found, or None."""
    content = [(no, _norm(line)) for no, line in enumerate(lines, 1) if _ALNUM.search(line)]
    keys = [_loop_key(t) for _, t in content]

    # A block of 1-4 lines repeated 3+ times in a row (blank lines ignored; bare score lines compared
    # without their numbers, so "Score 1: 2 / Score 2: 3 / Score 1: 3 / Score 2: 2 ..." is a loop too).
    for size in (1, 2, 3, 4):
        for i in range(len(keys) - 3 * size + 1):
            block = keys[i : i + size]
            if keys[i + size : i + 2 * size] != block or keys[i + 2 * size : i + 3 * size] != block:
                continue
            if size > 1 and len(set(block)) == 1:
                continue  # really a single line repeating; reported by size 1
            reps = 3
            while keys[i + reps * size : i + (reps + 1) * size] == block:
                reps += 1
            first, last = content[i][0], content[i + size - 1][0]
            where = f"line {first}" if size == 1 else f"the {size}-line block at lines {first}-{last}"
            return f"{where} ({_snip(lines[first - 1], 50)!r}) repeats {reps} times in a row"

    # The same non-empty line 3+ times anywhere. Bare score lines are left out here: scattered
    # "(Score 1: 3)" lines are a layout problem (malformed_scores), not a loop.
    prose = [(no, t) for no, t in content if not _SCORE_LINE_START.match(t)]
    counts = Counter(t for _, t in prose)
    for no, text in prose:
        if counts[text] >= 3:
            seen = [n for n, t in prose if t == text]
            return (
                f"line {no} ({_snip(lines[no - 1], 50)!r}) appears {counts[text]} times "
                f"(lines {', '.join(map(str, seen[:5]))}{'...' if len(seen) > 5 else ''})"
            )

    # A phrase looping inside one line.
    for no, line in enumerate(lines, 1):
        for match in _INLINE_LOOP.finditer(_norm(line)):
            unit = match.group(1)
            if _TWO_LETTERS.search(unit):
                reps = len(match.group(0)) // len(unit)
                return f"line {no} repeats the phrase {_snip(unit, 40)!r} {reps} times in a row"
    return None


def _find_placeholder(lines: list[str]) -> str | None:
    for no, line in enumerate(lines, 1):
        for match in _SLOT.finditer(line):
            slot = match.group("slot").strip()
            if not slot:
                if match.group("end") in (",", ";", "|", ")"):
                    return f"line {no} leaves a score slot empty: {_snip(line)!r}"
                continue
            for term in re.split(r"[+=]", slot):
                term = term.strip().strip("*").strip()
                term = term[:-1] if term.endswith(".") and len(term) > 1 and term[-2] != "." else term
                if term and _PLACEHOLDER_TERM.fullmatch(term):
                    return f"line {no} has the placeholder {term!r} where a number belongs: {_snip(line)!r}"
        found = _BRACKET_PLACEHOLDER.search(line) or _IMAGE_PLACEHOLDER.search(line)
        if found:
            return f"line {no} contains the template placeholder {found.group(0)!r}"
    return None


def _clean_for_verdict(line: str) -> tuple[str, bool]:
    """The line without markdown, list marker, labels and connectors; and whether a label was removed."""
    text = line.replace("\u2019", "'").replace("*", "").strip()
    text = re.sub(r"^(?:#+|>+)\s*", "", text)
    text = re.sub(r"^" + _MARKER, "", text)
    labelled = False
    for _ in range(4):
        match = _LABEL.match(text) or _CONNECTOR.match(text)
        if not match:
            break
        labelled = labelled or bool(_LABEL.match(text))
        text = text[match.end() :].strip()
    return text.strip(), labelled


def _strong_verdict(line: str) -> str | None:
    """'1', '2' or 'tie' when the whole line states a verdict in a recognised form."""
    text, labelled = _clean_for_verdict(line)
    match = _STRONG_VERDICT.match(text)
    if match:
        if match.group("tie"):
            return "tie"
        n = match.group("n") or match.group("n2")
        if match.group("m") and match.group("m") == n:
            return None  # "Image 1 is better than Image 1"
        return n
    if labelled:
        bare = _BARE_IMAGE.match(text)
        if bare:
            return bare.group("n")
    return None


def _loose_verdicts(line: str) -> list[str]:
    """Every verdict phrase in the line, in order ('1', '2', 'tie')."""
    text = line.replace("\u2019", "'").replace("*", "")
    found: list[tuple[int, str]] = []
    for match in _LOOSE_WIN.finditer(text):
        found.append((match.start(), match.group("n") or match.group("n2")))
    for match in _LOOSE_TIE.finditer(text):
        found.append((match.start(), "tie"))
    return [d for _, d in sorted(found)]


@dataclass
class _Totals:
    line: int
    text: str
    total: float
    terms: list[float] | None


@dataclass
class _Scan:
    dimensions: list[ParsedDimension] = field(default_factory=list)
    first_dim_line: int | None = None
    totals: dict[str, _Totals] = field(default_factory=dict)
    # (line number, direction, strong?) for every verdict statement
    verdicts: list[tuple[int, str, bool]] = field(default_factory=list)
    malformed: str | None = None
    out_of_range: str | None = None  # the first dimension score outside 1-5

    def flag(self, detail: str) -> None:
        if self.malformed is None:
            self.malformed = detail


def _parse_totals(no: int, line: str, expr: str) -> _Totals | None:
    expr = re.sub(r"\s+", "", expr)
    if "=" in expr:
        lhs, rhs = expr.split("=")
        return _Totals(no, line, float(rhs), [float(t) for t in lhs.split("+")])
    if "+" in expr:
        return None  # a sum without its stated total
    return _Totals(no, line, float(expr), None)


def _read_totals(
    scan: _Scan, no: int, line: str, found: list[tuple[str, str]], first_strong: int | None
) -> None:
    """Record the totals (image, expression) found on one line, flagging sums without a total and repeats."""
    for img, expr in found:
        totals = _parse_totals(no, line, expr)
        if totals is None:
            scan.flag(f"line {no} sums Image {img}'s scores without stating the total: {_snip(line)!r}")
        elif img in scan.totals:
            where = "the same line" if scan.totals[img].line == no else f"line {scan.totals[img].line}"
            scan.flag(f"line {no} repeats the total for Image {img} already given on {where}")
        else:
            scan.totals[img] = totals
    if first_strong is not None:
        scan.flag(f"line {no} gives a total after the verdict on line {first_strong}")


def _dimension_scores(no: int, line: str, match: re.Match[str]) -> tuple[float, float, str | None]:
    """The two scores of a dimension line and, if one is written x/N with N other than 5, why it is malformed."""
    scores: list[float] = []
    problem: str | None = None
    for i in ("1", "2"):
        raw, denominator = match.group(f"s{i}"), match.group(f"d{i}")
        scores.append(_num(raw))
        if denominator is not None and int(denominator) != SCORE_DENOMINATOR and problem is None:
            problem = (
                f"line {no} writes Score {i} as {raw}/{denominator}, but only x/{SCORE_DENOMINATOR} is read "
                f"as a score on the 1-5 scale: {_snip(line)!r}"
            )
    return scores[0], scores[1], problem


def _scan(lines: list[str]) -> _Scan:
    scan = _Scan()
    first_strong: int | None = None  # line of the first strong verdict
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue

        pair_match = _TOTALS_PAIR_RE.match(line)
        if pair_match:
            found = [(pair_match.group("img"), pair_match.group("expr"))]
            found.append((pair_match.group("img_b"), pair_match.group("expr_b")))
            _read_totals(scan, no, line, found, first_strong)
            continue

        total_match = _TOTAL_RE.match(line)
        if total_match:
            _read_totals(
                scan, no, line, [(total_match.group("img"), total_match.group("expr"))], first_strong
            )
            continue

        dim_match = _DIM_RE.match(line)
        if dim_match:
            name = (dim_match.group("n1") or dim_match.group("n2") or dim_match.group("n3")).strip()
            reason = dim_match.group("reason").strip()
            s1, s2, bad_scale = _dimension_scores(no, line, dim_match)
            if _SCORE_MENTION.search(name) or _SCORE_MENTION.search(reason):
                scan.flag(f"line {no} mentions a score outside its (Score 1, Score 2) pair: {_snip(line)!r}")
            elif len(name) > MAX_NAME_LEN or not _ALNUM.search(name):
                scan.flag(f"line {no} has no usable dimension name before its colon: {_snip(line)!r}")
            elif bad_scale is not None:
                scan.flag(bad_scale)
            elif first_strong is not None:
                scan.flag(f"line {no} gives a dimension after the verdict on line {first_strong}")
            elif scan.totals:
                scan.flag(f"line {no} gives a dimension after the totals: {_snip(line)!r}")
            else:
                if scan.first_dim_line is None:
                    scan.first_dim_line = no
                scan.dimensions.append(ParsedDimension(name=name, reason=reason, score_1=s1, score_2=s2))
                for img, score in (("1", s1), ("2", s2)):
                    if scan.out_of_range is None and not MIN_SCORE <= score <= MAX_SCORE:
                        written = dim_match.group(f"s{img}")
                        if dim_match.group(f"d{img}") is not None:
                            written += f"/{dim_match.group(f'd{img}')}"
                        scan.out_of_range = (
                            f"line {no} gives Image {img} the score {written}, outside the "
                            f"{_fmt(MIN_SCORE)}-{_fmt(MAX_SCORE)} scale: {_snip(line)!r}"
                        )
            continue

        pair_tail = _PAIR_TAIL.search(line)
        if pair_tail and not re.search(r":\s", line[: pair_tail.start()]):
            scan.flag(
                f"line {no} has a (Score 1, Score 2) pair but no 'name: ' (a colon followed by a space) "
                f"before its reason: {_snip(line)!r}"
            )
            continue

        if _SCORE_LINE_START.match(line) and _FRACTION.search(line):
            scan.flag(
                f"line {no} writes a total as a fraction; totals are plain sums, and only dimension "
                f"scores may be written x/{SCORE_DENOMINATOR}: {_snip(line)!r}"
            )
            continue

        if _SCORE_MENTION.search(line):
            scan.flag(
                f"line {no} mentions a score but is neither a dimension line with both scores "
                f"nor a totals line: {_snip(line)!r}"
            )
            continue

        strong = _strong_verdict(line)
        in_preamble = scan.first_dim_line is None
        loose = _loose_verdicts(line)
        if strong is not None:
            scan.verdicts.append((no, strong, True))
            if first_strong is None:
                first_strong = no
            scan.verdicts.extend((no, d, False) for d in loose if d != strong)
        elif not in_preamble:
            # Free text after the first dimension: verdict phrases in it must agree with the verdict.
            scan.verdicts.extend((no, d, False) for d in loose)
    return scan


def _verdict_digit(line: str) -> int | None:
    """Where, in `line`, the digit of its strong verdict is ("Image 2 is better": the "2"), or None
    (a tie, or no strong verdict). The position is in `line` as written, markdown stars included."""
    direction = _strong_verdict(line)
    if direction not in ("1", "2"):
        return None
    # `_clean_for_verdict` drops the stars, then only cuts a prefix (markers, labels, connectors) and
    # surrounding blanks: the cleaned text is a suffix of the starless line, stripped on the right.
    kept = [i for i, c in enumerate(line) if c != "*"]
    starless = "".join(line[i] for i in kept).replace("\u2019", "'").rstrip()
    cleaned, labelled = _clean_for_verdict(line)
    base = len(starless) - len(cleaned)
    if base < 0 or starless[base:] != cleaned:
        return None
    match = _STRONG_VERDICT.match(cleaned) or (_BARE_IMAGE.match(cleaned) if labelled else None)
    if match is None:
        return None
    group = next((g for g in ("n", "n2") if g in match.re.groupindex and match.group(g)), None)
    if group is None or match.group(group) != direction:
        return None
    return kept[base + match.start(group)]


def verdict_offset(text: str) -> int | None:
    """The offset in `text` of the digit ("1"/"2") that states the winner of a valid answer: the last
    line that states the verdict on its own ("Image 2 is better", "**Verdict:** Image 2", ...), in any
    form the parser accepts. None for an invalid answer or a tie."""
    parsed = parse(text)
    if parsed.outcome != "valid" or parsed.winner not in ("1", "2"):
        return None
    lines = _normalized(text).split("\n")
    strong = [
        no for no, direction, is_strong in _scan(lines).verdicts if is_strong and direction == parsed.winner
    ]
    if not strong:
        return None
    no = strong[-1]
    # line `no` starts where it does in the text as written (the same lines: only "\r\n"/"\r" become
    # "\n", and a prefix of byte-order marks and a suffix of end tokens go, which moves no line start)
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    start = starts[no - 1]
    if no == 1:
        start += len(text) - len(text.lstrip("\ufeff"))
    digit = _verdict_digit(lines[no - 1])
    if digit is None:
        return None
    offset = start + digit
    return offset if text[offset : offset + 1] == parsed.winner else None


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _normalized(text: str) -> str:
    """The text as the checks read it: no byte-order mark, "\n" line ends, no trailing end tokens."""
    text = (text or "").lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return _END_TOKENS.sub("", text)


def parse(text: str, finish_reason: str | None = None) -> ParsedJudgment:
    """Read one judge output strictly; see the module docstring for the checks and their order."""
    text = _normalized(text)

    if not text.strip():
        return _invalid("empty", "the judge produced no text")

    if finish_reason is not None and finish_reason.strip().lower() == "length":
        return _invalid(
            "truncated",
            "the generation stopped at the token limit (finish_reason 'length'), so the text may be cut off",
        )

    lines = text.split("\n")

    repetition = _find_repetition(lines)
    if repetition:
        return _invalid("repetition", f"repetition loop: {repetition}")

    placeholder = _find_placeholder(lines)
    if placeholder:
        return _invalid("placeholder", placeholder)

    scan = _scan(lines)
    preamble = ""
    if scan.first_dim_line is not None:
        preamble = "\n".join(line.rstrip() for line in lines[: scan.first_dim_line - 1]).strip()
    t1, t2 = scan.totals.get("1"), scan.totals.get("2")
    partial: dict[str, object] = {
        "dimensions": scan.dimensions,
        "total_1": t1.total if t1 else None,
        "total_2": t2.total if t2 else None,
        "preamble": preamble,
    }

    if scan.malformed:
        return _invalid("malformed_scores", scan.malformed, **partial)

    if scan.out_of_range:
        return _invalid("score_out_of_range", scan.out_of_range, **partial)

    if not scan.dimensions:
        return _invalid("no_dimensions", "no line has the form 'name: reason (Score 1: n, Score 2: m)'")

    if t1 is None or t2 is None:
        missing = [f"'Score {i}: ...'" for i, t in (("1", t1), ("2", t2)) if t is None]
        what = (
            f"the totals lines {missing[0]} and {missing[1]} are"
            if len(missing) == 2
            else f"the totals line {missing[0]} is"
        )
        return _invalid("missing_totals", f"{what} missing after the dimension lines", **partial)

    for img, totals in (("1", t1), ("2", t2)):
        dim_scores = [d.score_1 if img == "1" else d.score_2 for d in scan.dimensions]
        expected = sum(dim_scores)
        terms = totals.terms
        if terms is not None and (
            len(terms) != len(dim_scores)
            or not all(_close(t, d) for t, d in zip(terms, dim_scores, strict=True))
        ):
            return _invalid(
                "totals_mismatch",
                f"line {totals.line} adds {'+'.join(map(_fmt, terms))} for Image {img} but its "
                f"dimension scores are {'+'.join(map(_fmt, dim_scores))}",
                **partial,
            )
        if terms is not None and not _close(sum(terms), totals.total):
            return _invalid(
                "totals_mismatch",
                f"line {totals.line} says {'+'.join(map(_fmt, terms))}={_fmt(totals.total)} for Image {img} "
                f"but the terms add up to {_fmt(sum(terms))}",
                **partial,
            )
        if not _close(totals.total, expected):
            return _invalid(
                "totals_mismatch",
                f"line {totals.line} gives Image {img} a total of {_fmt(totals.total)} but its dimension "
                f"scores add up to {_fmt(expected)}",
                **partial,
            )

    if not scan.verdicts:
        return _invalid(
            "missing_verdict",
            "no line says 'Image 1 is better', 'Image 2 is better' or that it is a tie",
            **partial,
        )

    first_no, first_dir, _ = scan.verdicts[0]
    for no, direction, _ in scan.verdicts[1:]:
        if direction != first_dir:
            where = f"line {no}" if no != first_no else "the same line"
            return _invalid(
                "contradicting_verdicts",
                f"line {first_no} says {_describe(first_dir)} but {where} says {_describe(direction)}",
                **partial,
            )

    if not any(strong for _, _, strong in scan.verdicts):
        return _invalid(
            "missing_verdict",
            f"line {first_no} mentions that {_describe(first_dir)} only inside other text; "
            "no line states the verdict on its own",
            **partial,
        )

    by_totals: Winner = "tie" if _close(t1.total, t2.total) else ("1" if t1.total > t2.total else "2")
    if first_dir != by_totals:
        return _invalid(
            "verdict_mismatch",
            f"line {first_no} says {_describe(first_dir)} but the totals are {_fmt(t1.total)} vs "
            f"{_fmt(t2.total)}, "
            f"so {_describe(by_totals)}",
            **partial,
        )

    return ParsedJudgment(
        outcome="valid",
        dimensions=scan.dimensions,
        total_1=t1.total,
        total_2=t2.total,
        winner=by_totals,
        preamble=preamble,
    )
