"""The strict `pigreward-v1` parser: corpus of real-shaped outputs plus targeted edge cases.

Corpus layout (tests/data/pigreward_v1/):
- valid/NN_slug.txt with a sibling NN_slug.json holding the exact expected parse;
- invalid/<reason>__slug.txt, where <reason> is the expected `reason`; a stem ending in `__truncated`
  is parsed with finish_reason="length".
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from workers.protocols.pigreward_v1_parser import (
    ParsedJudgment,
    ParseReason,
    _find_repetition,
    parse,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "pigreward_v1"
VALID = sorted((DATA / "valid").glob("*.txt"))
INVALID = sorted((DATA / "invalid").glob("*.txt"))
REASONS: tuple[str, ...] = typing.get_args(ParseReason)

PAPER = (DATA / "valid" / "01_paper_example.txt").read_text(encoding="utf-8")


def _read(path: Path) -> str:
    # newline="" keeps the file's own line endings, so the parser sees exactly what is stored.
    with path.open(encoding="utf-8", newline="") as fh:
        return fh.read()


def _expected_reason(path: Path) -> str:
    return path.stem.split("__", 1)[0]


def _finish_reason(path: Path) -> str | None:
    return "length" if path.stem.endswith("__truncated") else None


def _with_verdict(verdict: str) -> str:
    """The paper example with its last line replaced."""
    return PAPER.replace("Image 2 is better\n", verdict + "\n")


# ----------------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------------


def test_corpus_is_complete() -> None:
    assert len(VALID) >= 12
    for path in VALID:
        assert path.with_suffix(".json").is_file(), f"{path.name} has no expected .json"
    for path in INVALID:
        assert _expected_reason(path) in REASONS, f"{path.name}: unknown reason in file name"
    for reason in REASONS:
        count = sum(1 for p in INVALID if _expected_reason(p) == reason)
        assert count >= 2, f"only {count} invalid corpus file(s) for {reason!r}"
    for path in INVALID:
        if _expected_reason(path) == "truncated":
            assert path.stem.endswith("__truncated"), path.name


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_corpus_parses_exactly(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    result = parse(_read(path))
    assert result.model_dump() == expected


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_corpus_with_windows_line_endings(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    text = _read(path).replace("\r\n", "\n").replace("\n", "\r\n")
    assert parse(text).model_dump() == expected


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_corpus_with_stop_finish_reason(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert parse(_read(path), "stop").model_dump() == expected


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_repetition_detector_is_quiet_on_valid_corpus(path: Path) -> None:
    lines = _read(path).replace("\r\n", "\n").split("\n")
    assert _find_repetition(lines) is None


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_corpus_reports_its_reason(path: Path) -> None:
    result = parse(_read(path), _finish_reason(path))
    assert result.outcome == "invalid"
    assert result.reason == _expected_reason(path), result.detail
    assert result.winner is None
    assert result.detail and result.detail.strip()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_corpus_with_windows_line_endings(path: Path) -> None:
    text = _read(path).replace("\r\n", "\n").replace("\n", "\r\n")
    result = parse(text, _finish_reason(path))
    assert (result.outcome, result.reason, result.winner) == ("invalid", _expected_reason(path), None)


# ----------------------------------------------------------------------------------------------------
# Order of the checks
# ----------------------------------------------------------------------------------------------------


def test_truncation_beats_an_otherwise_valid_text() -> None:
    assert parse(PAPER).outcome == "valid"
    result = parse(PAPER, finish_reason="length")
    assert (result.outcome, result.reason, result.winner) == ("invalid", "truncated", None)
    assert "length" in (result.detail or "")


def test_empty_beats_truncated() -> None:
    assert parse("", "length").reason == "empty"
    assert parse(" \r\n\t\n", None).reason == "empty"


def test_repetition_beats_placeholder_and_structure() -> None:
    text = "Warm palette: amber light. (Score 1: 4, Score 2: 2)\n" + "Score 1: X\nScore 2: X\n" * 10
    assert parse(text).reason == "repetition"


def test_placeholder_beats_structure() -> None:
    assert parse(PAPER.replace("Score 1: 4+3+1=8", "Score 1: total")).reason == "placeholder"


def test_malformed_scores_beats_no_dimensions() -> None:
    text = "Image 1 glows.\n(Score 1: 8)\nImage 2 is cold.\n(Score 2: 9)\nImage 2 is better\n"
    assert parse(text).reason == "malformed_scores"


# ----------------------------------------------------------------------------------------------------
# Repetition
# ----------------------------------------------------------------------------------------------------


def test_score_loop_is_repetition() -> None:
    text = PAPER.replace("Image 2 is better\n", "") + "Score 1: 2\nScore 2: 2\n" * 20
    result = parse(text)
    assert result.reason == "repetition"
    assert "repeats" in (result.detail or "")


def test_score_loop_with_changing_numbers_is_repetition() -> None:
    loop = "".join(f"Score 1: {a}\nScore 2: {b}\n" for a, b in [(2, 3), (3, 2), (4, 4), (1, 2)])
    assert parse(PAPER + loop).reason == "repetition"


def test_same_line_three_times_anywhere_is_repetition() -> None:
    line = "Let me look at the user's references again.\n"
    text = line + PAPER.replace("Score 1: 4+3+1=8\n", line + "Score 1: 4+3+1=8\n") + line
    assert parse(text).reason == "repetition"


def test_same_line_twice_is_not_repetition() -> None:
    assert parse(PAPER + "Image 2 is better\n").winner == "2"


def test_separate_score_lines_with_equal_values_are_malformed_not_repetition() -> None:
    # Three dimensions all scored 3 for Image 1, each score on its own line: a layout error.
    text = (
        "Palette: warm.\n(Score 1: 3)\n(Score 2: 2)\n"
        "Clutter: sparse.\n(Score 1: 3)\n(Score 2: 4)\n"
        "Focus: soft.\n(Score 1: 3)\n(Score 2: 1)\n"
        "Score 1: 9\nScore 2: 7\nImage 1 is better\n"
    )
    assert parse(text).reason == "malformed_scores"


def test_phrase_looping_inside_one_line_is_repetition() -> None:
    text = PAPER + "and the amber light and the amber light and the amber light and the amber light"
    assert parse(text).reason == "repetition"


# ----------------------------------------------------------------------------------------------------
# Placeholders
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old,new",
    [
        ("Score 1: 4+3+1=8", "Score 1: total"),
        ("Score 1: 4+3+1=8", "Score 1: X"),
        ("Score 1: 4+3+1=8", "Score 1: ?"),
        ("Score 1: 4+3+1=8", "Score 1: 4+3+1=total"),
        ("Score 1: 4+3+1=8", "Score 1: a+b+c=total"),
        ("Score 1: 4+3+1=8", "Score 1: <score>"),
        ("Score 1: 4+3+1=8", "Score 1: [score]"),
        ("Score 1: 4+3+1=8", "Score 1: {total_1}"),
        ("(Score 1: 4, Score 2: 2)", "(Score 1: N, Score 2: M)"),
        ("(Score 1: 4, Score 2: 2)", "(Score 1: , Score 2: )"),
        ("(Score 1: 4, Score 2: 2)", "(Score 1: <int>, Score 2: <int>)"),
        ("Image 2 is better", "Image X is better"),
        ("Image 2 is better", "[Image 1 or Image 2] is better"),
        ("Image 2 is better", "<winner>"),
    ],
)
def test_placeholders(old: str, new: str) -> None:
    result = parse(PAPER.replace(old, new, 1))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "placeholder", None)


# ----------------------------------------------------------------------------------------------------
# Dimension lines
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,name,reason",
    [
        ("Warm palette: amber light. (Score 1: 4, Score 2: 2)", "Warm palette", "amber light."),
        ("**Warm palette**: amber light. (Score 1: 4, Score 2: 2)", "Warm palette", "amber light."),
        ("**Warm palette:** amber light. (Score 1: 4, Score 2: 2)", "Warm palette", "amber light."),
        ("1. Warm palette: amber light. (Score 1: 4, Score 2: 2)", "Warm palette", "amber light."),
        ("- Warm palette: amber light. (Score 1: 4, Score 2: 2).", "Warm palette", "amber light."),
        ("* **Warm palette**: amber light (Score 1: 4, Score 2: 2)", "Warm palette", "amber light"),
        ("  Warm palette :   amber light   ( score 1 : 4 ,score 2:2 )  ", "Warm palette", "amber light"),
        ("Warm palette: ratio 3:2 framing. (Score 1: 4, Score 2: 2)", "Warm palette", "ratio 3:2 framing."),
        ("Warm palette: amber light. (Score 1: 4/5, Score 2: 2/5)", "Warm palette", "amber light."),
        ("Warm palette: amber light. (Score 1: 4 / 5, Score 2: 2)", "Warm palette", "amber light."),
        ("Warm palette: amber light. (Score 1: 4.0, Score 2: 2.00)", "Warm palette", "amber light."),
        ("Warm palette: (Score 1: 4, Score 2: 2)", "Warm palette", ""),
    ],
)
def test_dimension_line_variants(line: str, name: str, reason: str) -> None:
    text = PAPER.replace(PAPER.splitlines()[0], line)
    result = parse(text)
    assert result.outcome == "valid", result.detail
    assert (result.dimensions[0].name, result.dimensions[0].reason) == (name, reason)
    assert (result.dimensions[0].score_1, result.dimensions[0].score_2) == (4, 2)


@pytest.mark.parametrize(
    "line",
    [
        "Warm palette: amber light. (Score 1: 4)",  # one score only
        "Warm palette: amber light. (Score 2: 2, Score 1: 4)",  # swapped
        "Warm palette: amber light. (Score 1: 3/4, Score 2: 2)",  # a scale other than x/5
        "Warm palette: amber light. (Score 1: 4, Score 2: 7/10)",  # a scale other than x/5
        "Warm palette: amber light. (Score 1: 4,5, Score 2: 2)",  # a decimal comma
        "Warm palette:amber light. (Score 1: 4, Score 2: 2)",  # no whitespace after the name's colon
        "Warm palette: amber light (Score 1: 3) and more. (Score 1: 4, Score 2: 2)",  # score in the reason
        "Warm palette amber light (Score 1: 4, Score 2: 2)",  # no name
        "The overall warmth and amber glow of the lantern-lit harbour scene that the user keeps choosing "
        "again: amber light. (Score 1: 4, Score 2: 2)",  # name over 80 characters
    ],
)
def test_malformed_dimension_lines(line: str) -> None:
    result = parse(PAPER.replace(PAPER.splitlines()[0], line))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "malformed_scores", None)
    assert "line 1" in (result.detail or "")


@pytest.mark.parametrize(
    "line,name,reason",
    [
        (
            "Aspect 16:9: Image 1 keeps the wide frame. (Score 1: 4, Score 2: 2)",
            "Aspect 16:9",
            "Image 1 keeps the wide frame.",
        ),
        (
            "Colour: warm tones: Image 1 glows. (Score 1: 4, Score 2: 2)",
            "Colour",
            "warm tones: Image 1 glows.",
        ),
        ("**Aspect 16:9**: wide frame. (Score 1: 4, Score 2: 2)", "Aspect 16:9", "wide frame."),
        ("**Aspect 16:9:** wide frame. (Score 1: 4, Score 2: 2)", "Aspect 16:9", "wide frame."),
        ("*Aspect 16:9*: wide frame. (Score 1: 4, Score 2: 2)", "Aspect 16:9", "wide frame."),
        ("__Aspect 16:9__: wide frame. (Score 1: 4, Score 2: 2)", "Aspect 16:9", "wide frame."),
        ("2. Aspect 16:9 : wide: very. (Score 1: 4, Score 2: 2)", "Aspect 16:9", "wide: very."),
        ("Time 10:30:00: late light. (Score 1: 4, Score 2: 2)", "Time 10:30:00", "late light."),
        ("Colour:\twarm tones. (Score 1: 4, Score 2: 2)", "Colour", "warm tones."),
    ],
)
def test_dimension_name_ends_at_the_first_colon_followed_by_whitespace(
    line: str, name: str, reason: str
) -> None:
    result = parse(PAPER.replace(PAPER.splitlines()[0], line))
    assert result.outcome == "valid", result.detail
    assert (result.dimensions[0].name, result.dimensions[0].reason) == (name, reason)


def test_line_without_colon_and_whitespace_has_no_name() -> None:
    result = parse(PAPER.replace("Warm palette: Image 1", "Warm palette:Image 1"))
    assert result.reason == "malformed_scores"
    assert "line 1" in (result.detail or "") and "colon followed by a space" in (result.detail or "")


def test_decimal_scores_and_totals() -> None:
    text = PAPER.replace("(Score 1: 4, Score 2: 2)", "(Score 1: 4.5, Score 2: 2)")
    text = text.replace("(Score 1: 1, Score 2: 4)", "(Score 1: 1, Score 2: 3.5)")
    text = text.replace("Score 1: 4+3+1=8", "Score 1: 4.5+3+1=8.5").replace(
        "Score 2: 2+3+4=9", "Score 2: 2+3+3.5=8.5"
    )
    result = parse(text.replace("Image 2 is better", "Tie"))
    assert (result.outcome, result.winner, result.total_1, result.total_2) == ("valid", "tie", 8.5, 8.5), (
        result.detail
    )
    assert [(d.score_1, d.score_2) for d in result.dimensions] == [(4.5, 2), (3, 3), (1, 3.5)]
    assert all(isinstance(d.score_1, float) and isinstance(d.score_2, float) for d in result.dimensions)
    assert isinstance(result.total_1, float) and isinstance(result.total_2, float)


def test_float_sums_compare_with_a_tolerance() -> None:
    # 1.1 + 2.2 is 3.3000000000000003 in binary floating point.
    text = (
        "Gravel: clean lines. (Score 1: 1.1, Score 2: 1.2)\n"
        "Moss: richer green. (Score 1: 2.2, Score 2: 2.1)\n"
        "Score 1: 1.1+2.2=3.3\nScore 2: 1.2+2.1=3.3\nTie\n"
    )
    result = parse(text)
    assert (result.outcome, result.winner, result.total_1, result.total_2) == ("valid", "tie", 3.3, 3.3), (
        result.detail
    )
    assert parse(text.replace("=3.3\nScore 2", "=3.4\nScore 2")).reason == "totals_mismatch"


def test_decimal_verdict_against_totals() -> None:
    text = PAPER.replace("(Score 1: 4, Score 2: 2)", "(Score 1: 4.5, Score 2: 2)").replace(
        "Score 1: 4+3+1=8", "Score 1: 4.5+3+1=8.5"
    )
    assert parse(text).winner == "2"
    result = parse(text.replace("Image 2 is better", "Image 1 is better"))
    assert result.reason == "verdict_mismatch"
    assert "8.5 vs 9," in (result.detail or "")


@pytest.mark.parametrize(
    "pair,scores", [("(Score 1: 4/5, Score 2: 2/5)", (4, 2)), ("(Score 1: 4.5/5, Score 2: 2)", (4.5, 2))]
)
def test_scores_out_of_five(pair: str, scores: tuple[float, float]) -> None:
    text = PAPER.replace("(Score 1: 4, Score 2: 2)", pair)
    if scores[0] == 4.5:
        text = text.replace("Score 1: 4+3+1=8", "Score 1: 4.5+3+1=8.5")
    result = parse(text)
    assert result.outcome == "valid", result.detail
    assert (result.dimensions[0].score_1, result.dimensions[0].score_2) == scores


@pytest.mark.parametrize(
    "pair,written",
    [
        ("(Score 1: 3/4, Score 2: 2)", "3/4"),
        ("(Score 1: 4, Score 2: 7/10)", "7/10"),
        ("(Score 1: 8/10, Score 2: 4/10)", "8/10"),
    ],
)
def test_scores_on_another_scale_are_malformed(pair: str, written: str) -> None:
    result = parse(PAPER.replace("(Score 1: 4, Score 2: 2)", pair))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "malformed_scores", None)
    assert "line 1" in (result.detail or "") and written in (result.detail or "")


@pytest.mark.parametrize(
    "pair,img,written",
    [
        ("(Score 1: 0, Score 2: 2)", "1", "0"),
        ("(Score 1: 4, Score 2: 6)", "2", "6"),
        ("(Score 1: 5.5, Score 2: 2)", "1", "5.5"),
        ("(Score 1: 0.5, Score 2: 2)", "1", "0.5"),
        ("(Score 1: 6/5, Score 2: 2)", "1", "6/5"),
        ("(Score 1: 0/5, Score 2: 2)", "1", "0/5"),
        ("(Score 1: -1, Score 2: 2)", "1", "-1"),
        ("(Score 1: 4, Score 2: -2)", "2", "-2"),
        ("(Score 1: 104, Score 2: 2)", "1", "104"),
    ],
)
def test_scores_outside_one_to_five(pair: str, img: str, written: str) -> None:
    result = parse(PAPER.replace("(Score 1: 4, Score 2: 2)", pair))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "score_out_of_range", None)
    assert f"line 1 gives Image {img} the score {written}," in (result.detail or "")
    assert len(result.dimensions) == 3  # kept for diagnosis


@pytest.mark.parametrize(
    "pair", ["(Score 1: 1, Score 2: 5)", "(Score 1: 1.0, Score 2: 5.0)", "(Score 1: 1/5, Score 2: 5/5)"]
)
def test_scale_ends_are_in_range(pair: str) -> None:
    text = PAPER.replace("(Score 1: 4, Score 2: 2)", pair)
    text = text.replace("Score 1: 4+3+1=8", "Score 1: 1+3+1=5").replace(
        "Score 2: 2+3+4=9", "Score 2: 5+3+4=12"
    )
    result = parse(text)
    assert (result.outcome, result.winner) == ("valid", "2"), result.detail


def test_score_out_of_range_comes_right_after_malformed_scores() -> None:
    assert REASONS.index("score_out_of_range") == REASONS.index("malformed_scores") + 1
    out = PAPER.replace("(Score 1: 4, Score 2: 2)", "(Score 1: 6, Score 2: 2)")
    # a malformed line later in the text still wins ...
    assert parse(out.replace("(Score 1: 1, Score 2: 4)", "(Score 1: 1)")).reason == "malformed_scores"
    # ... and out of range beats the totals (which no longer add up) and the verdict checks.
    assert parse(out).reason == "score_out_of_range"
    assert parse(out.replace("Score 1: 4+3+1=8\n", "")).reason == "score_out_of_range"
    assert parse(out.replace("Image 2 is better\n", "")).reason == "score_out_of_range"


def test_score_mention_in_free_text_is_malformed() -> None:
    result = parse(_with_verdict("Since Score 2 is higher, Image 2 is better"))
    assert result.reason == "malformed_scores"
    assert "line 6" in (result.detail or "")


# ----------------------------------------------------------------------------------------------------
# Totals
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["Score 1: 4+3+1=8", "Score 1: 4 + 3 + 1 = 8", "Score 1: 8", "**Score 1:** 4+3+1=8", "score 1: 4+3+1=8."],
)
def test_totals_line_variants(line: str) -> None:
    result = parse(PAPER.replace("Score 1: 4+3+1=8", line))
    assert (result.outcome, result.total_1, result.total_2, result.winner) == ("valid", 8, 9, "2")


@pytest.mark.parametrize(
    "line,reason",
    [
        ("Score 1: 4+3+1", "malformed_scores"),  # a sum without its total
        ("Score 1: 1+3+4=8", "totals_mismatch"),  # right sum, terms not in dimension order
        ("Score 1: 4+3=7", "totals_mismatch"),  # a dimension left out
        ("Score 1: 4+3+1=9", "totals_mismatch"),  # wrong arithmetic
        ("Score 1: 9", "totals_mismatch"),  # wrong plain total
    ],
)
def test_totals_errors(line: str, reason: str) -> None:
    result = parse(PAPER.replace("Score 1: 4+3+1=8", line))
    assert (result.outcome, result.reason, result.winner) == ("invalid", reason, None)
    assert "line 4" in (result.detail or "")


@pytest.mark.parametrize(
    "line",
    [
        "Score 1: 4+3+1=8, Score 2: 2+3+4=9",
        "Score 1: 8; Score 2: 9",
        "Score 1: 8 | Score 2: 9",
        "Score 1: 8  Score 2: 9",
        "Score 1: 8 Score 2: 9.",
        "Score 1: 4 + 3 + 1 = 8 , Score 2: 9",
        "Total score 1: 8, Total score 2: 9",
        "**Score 1:** 8, **Score 2:** 9",
        "**Total score 1**: 4+3+1=8 | **Total score 2**: 2+3+4=9",
        "Total: Score 1: 8, Score 2: 9",
        "**Totals:** Score 1: 8; Score 2: 9",
        "- Score 1: 8, Score 2: 9",
        "Score 2: 9, Score 1: 8",
    ],
)
def test_one_line_totals(line: str) -> None:
    result = parse(PAPER.replace("Score 1: 4+3+1=8\nScore 2: 2+3+4=9", line))
    assert (result.outcome, result.total_1, result.total_2, result.winner) == ("valid", 8, 9, "2"), (
        result.detail
    )


@pytest.mark.parametrize(
    "line,reason,detail",
    [
        ("Score 1: 8, Score 2: 10", "totals_mismatch", "line 4 gives Image 2 a total of 10 but"),
        ("Score 1: 4+3+1=8; Score 2: 2+3+4=10", "totals_mismatch", "line 4 says 2+3+4=10 for Image 2"),
        ("Score 1: 1+3+4=8 | Score 2: 9", "totals_mismatch", "line 4 adds 1+3+4 for Image 1"),
        ("Score 1: 4+3+1, Score 2: 9", "malformed_scores", "line 4 sums Image 1's scores"),
        ("Score 1: 8, Score 1: 8", "malformed_scores", "line 4 repeats the total for Image 1"),
        ("Score 1: 8, Image 2: 9", "malformed_scores", "line 4"),
        ("Score 1: 8 / Score 2: 9", "malformed_scores", "line 4"),
        ("Score 1: 8/15, Score 2: 9/15", "malformed_scores", "line 4 writes a total as a fraction"),
    ],
)
def test_one_line_totals_errors(line: str, reason: str, detail: str) -> None:
    result = parse(PAPER.replace("Score 1: 4+3+1=8\nScore 2: 2+3+4=9", line))
    assert (result.outcome, result.reason, result.winner) == ("invalid", reason, None)
    assert detail in (result.detail or ""), result.detail


def test_one_line_totals_with_a_separate_total_is_a_repeat() -> None:
    result = parse(PAPER.replace("Score 2: 2+3+4=9", "Score 1: 8, Score 2: 9"))
    assert result.reason == "malformed_scores"
    assert "line 5 repeats the total for Image 1 already given on line 4" in (result.detail or "")


def test_one_line_totals_after_the_verdict_are_malformed() -> None:
    text = PAPER.replace(
        "Score 1: 4+3+1=8\nScore 2: 2+3+4=9\nImage 2 is better", "Image 2 is better\nScore 1: 8, Score 2: 9"
    )
    result = parse(text)
    assert result.reason == "malformed_scores"
    assert "after the verdict" in (result.detail or "")


@pytest.mark.parametrize(
    "line",
    [
        "Score 1: X | Score 2: Y",
        "Score 1: X  Score 2: Y",
        "Score 1: 8, Score 2: total",
        "Score 1: 8 | Score 2: |",
    ],
)
def test_one_line_totals_placeholders(line: str) -> None:
    assert parse(PAPER.replace("Score 1: 4+3+1=8\nScore 2: 2+3+4=9", line)).reason == "placeholder"


@pytest.mark.parametrize(
    "line,total",
    [("Score 1: 4.5+3+1=8.5", 8.5), ("Score 1: 8.5", 8.5), ("**Score 1:** 4.5 + 3 + 1 = 8.50", 8.5)],
)
def test_decimal_totals(line: str, total: float) -> None:
    text = PAPER.replace("(Score 1: 4, Score 2: 2)", "(Score 1: 4.5, Score 2: 2)")
    result = parse(text.replace("Score 1: 4+3+1=8", line))
    assert (result.outcome, result.total_1, result.winner) == ("valid", total, "2"), result.detail


@pytest.mark.parametrize(
    "line,detail",
    [
        ("Score 1: 8/15", "line 4 writes a total as a fraction"),
        ("Score 1: 4/5+3+1=8", "line 4 writes a total as a fraction"),
        ("Score 1: -8", "line 4"),
    ],
)
def test_fractions_and_signs_in_totals_are_malformed(line: str, detail: str) -> None:
    result = parse(PAPER.replace("Score 1: 4+3+1=8", line))
    assert (result.outcome, result.reason) == ("invalid", "malformed_scores")
    assert detail in (result.detail or ""), result.detail


@pytest.mark.parametrize(
    "old,new,detail",
    [
        ("Score 1: 4+3+1=8", "Score 1: 4+3+1=9", "line 4 says 4+3+1=9 for Image 1 but the terms add up to 8"),
        (
            "Score 1: 4+3+1=8",
            "Score 1: 9.0",
            "line 4 gives Image 1 a total of 9 but its dimension scores add up to 8",
        ),
        (
            "Score 1: 4+3+1=8",
            "Score 1: 4.0+3+1.50=8.5",
            "line 4 adds 4+3+1.5 for Image 1 but its dimension scores are 4+3+1",
        ),
    ],
)
def test_totals_mismatch_details_print_whole_numbers_without_decimals(
    old: str, new: str, detail: str
) -> None:
    result = parse(PAPER.replace(old, new))
    assert result.reason == "totals_mismatch"
    assert result.detail == detail


def test_missing_second_total() -> None:
    result = parse(PAPER.replace("Score 2: 2+3+4=9\n", ""))
    assert result.reason == "missing_totals"
    assert "Score 2" in (result.detail or "")


def test_duplicate_total_is_malformed() -> None:
    assert (
        parse(PAPER.replace("Score 2: 2+3+4=9", "Score 2: 2+3+4=9\nScore 2: 9")).reason == "malformed_scores"
    )


def test_dimension_after_totals_is_malformed() -> None:
    text = PAPER.replace("Image 2 is better", "Extra: late. (Score 1: 1, Score 2: 1)\nImage 2 is better")
    assert parse(text).reason == "malformed_scores"


def test_invalid_parse_keeps_diagnostics_but_no_winner() -> None:
    result = parse(PAPER.replace("Score 1: 4+3+1=8", "Score 1: 4+3+1=9"))
    assert result.reason == "totals_mismatch"
    assert len(result.dimensions) == 3
    assert result.winner is None


# ----------------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verdict",
    [
        "Image 2 is better",
        "Image 2 is better.",
        "image 2 is better",
        "Therefore, Image 2 is better",
        "Thus Image 2 is better.",
        "Overall, Image 2 is better for this user.",
        "Image 2 is preferred",
        "Image 2 is the better one.",
        "Image 2 is better than Image 1.",
        "Image 2 is better (9 vs 8).",
        "Image 2 wins.",
        "**Image 2 is better**",
        "Final answer: Image 2",
        "Verdict: Image 2 is better.",
        "The winner is Image 2.",
        "Image 2 is better because of its dreamy blur.",
        "Image 2 is better<|im_end|>",
    ],
)
def test_winner_verdict_variants(verdict: str) -> None:
    result = parse(_with_verdict(verdict))
    assert (result.outcome, result.winner) == ("valid", "2"), result.detail


@pytest.mark.parametrize(
    "verdict",
    [
        "Tie",
        "Tie.",
        "It's a tie",
        "It\u2019s a tie.",
        "It is a tie for this user.",
        "Both images are equally good",
        "The two images are tied.",
        "Verdict: tie",
        "Neither image is better.",
    ],
)
def test_tie_verdict_variants(verdict: str) -> None:
    text = _with_verdict(verdict).replace("Score 2: 2+3+4=9", "Score 2: 2+3+3=8")
    text = text.replace("(Score 1: 1, Score 2: 4)", "(Score 1: 1, Score 2: 3)")
    result = parse(text)
    assert (result.outcome, result.winner, result.total_1, result.total_2) == ("valid", "tie", 8, 8)


@pytest.mark.parametrize(
    "verdict",
    [
        "Tie\nImage 2 is better",
        "It's a tie, but Image 2 is better.",
        "Image 1 is better and Image 2 is better.",
        "Image 2 is better\nImage 1 is better",
        "Image 2 is better.\nOn reflection, Image 1 is better.",
    ],
)
def test_contradicting_verdicts(verdict: str) -> None:
    result = parse(_with_verdict(verdict))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "contradicting_verdicts", None)


def test_agreeing_repeated_verdict_is_fine() -> None:
    result = parse(_with_verdict("Image 2 is better.\nSo Image 2 is better for this user."))
    assert result.winner == "2"


@pytest.mark.parametrize(
    "verdict",
    [
        "",
        "Both images have merits.",
        "I think Image 2 might be better.",
        "Image 2 is not better.",
        "Summary line: Image 2 is better, probably.",
    ],
)
def test_missing_verdict(verdict: str) -> None:
    result = parse(_with_verdict(verdict))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "missing_verdict", None)


@pytest.mark.parametrize("verdict", ["Image 1 is better", "Tie", "Image 1 is preferred."])
def test_verdict_against_totals(verdict: str) -> None:
    result = parse(_with_verdict(verdict))
    assert (result.outcome, result.reason, result.winner) == ("invalid", "verdict_mismatch", None)
    assert "8 vs 9" in (result.detail or "")


def test_verdict_before_dimensions_is_malformed() -> None:
    assert parse("Image 2 is better\n" + PAPER).reason == "malformed_scores"


# ----------------------------------------------------------------------------------------------------
# Free text
# ----------------------------------------------------------------------------------------------------


def test_preamble_is_kept_and_may_mention_images() -> None:
    pre = "The user likes warm light.\nI must decide whether Image 1 is better for this user."
    result = parse(pre + "\n\n" + PAPER)
    assert (result.outcome, result.winner, result.preamble) == ("valid", "2", pre)


def test_text_after_verdict_without_scores_is_ignored() -> None:
    result = parse(PAPER + "\nImage 1 is better lit, but the blur decides it for this user.\n")
    assert (result.outcome, result.winner) == ("valid", "2")


def test_text_after_verdict_with_scores_is_malformed() -> None:
    assert parse(PAPER + "Score 1 was close.\n").reason == "malformed_scores"


def test_free_text_between_dimensions_is_allowed() -> None:
    text = PAPER.replace("Minimal clutter", "The next aspect matters too.\n\nMinimal clutter")
    result = parse(text)
    assert (result.outcome, len(result.dimensions)) == ("valid", 3)


def test_byte_order_mark_and_old_mac_line_endings() -> None:
    result = parse("\ufeff" + PAPER.replace("\n", "\r"))
    assert (result.outcome, result.winner) == ("valid", "2")


def test_valid_result_shape() -> None:
    result = parse(PAPER)
    assert isinstance(result, ParsedJudgment)
    assert (result.reason, result.detail, result.preamble) == (None, None, "")
    assert [d.name for d in result.dimensions] == ["Warm palette", "Minimal clutter", "Soft focus"]
