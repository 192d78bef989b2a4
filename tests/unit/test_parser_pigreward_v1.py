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
        "Warm palette: amber light. (Score 1: 4.5, Score 2: 2)",  # not an integer
        "Warm palette: amber light. (Score 1: -4, Score 2: 2)",  # negative
        "Warm palette: amber light. (Score 1: 104, Score 2: 2)",  # above 100
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
