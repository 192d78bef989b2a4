"""Grammars that only admit the released `pigreward-v1` answer: loop control for the judge.

The released judge's main failure is looping until the token limit (PAPER.md). A grammar bounds the
answer: 1-5 dimension lines `name: reason (Score 1: a, Score 2: b)` with scores 1-5, bounded names and
reasons, then the two totals and one verdict, and nothing after it. Two flavours, as SGLang accepts them:

- `ebnf`: also tracks the running sums, so the totals and the verdict can only be the ones the dimension
  scores imply (the paper's decision rule). A grammar cannot check that a written sum repeats the
  dimension scores term by term (that needs the whole score sequence as state), so this flavour writes
  each total as one number (`Score 1: 8`), which the parser accepts as well. Names and reasons hold no
  digits, control characters or brackets, so a reason can never mention "Score 1" or look like a
  template placeholder (both refused by the parser).
- `regex`: the released shape with its `4+3+1=8` totals, lengths bounded; the arithmetic is left to the
  parser (a mismatch is `invalid`, as without a grammar).

Both are off by default (`PIGREWARD_GRAMMAR=off`) until measured on the real weights.
"""

from __future__ import annotations

from functools import lru_cache

from workers.generation import Grammar

MAX_DIMENSIONS = 5
MAX_SCORE = 5
NAME_CHARS = 40
REASON_CHARS = 160
_VERDICTS = {"1": "Image 1 is better", "2": "Image 2 is better", "tie": "It is a tie"}


def max_chars(kind: str) -> int:
    """The longest answer a grammar admits, in characters: every token writes at least one, so this
    many tokens (and the stop token) always hold a grammar-constrained answer."""
    line = NAME_CHARS + len(": ") + REASON_CHARS + len(f" (Score 1: {MAX_SCORE}, Score 2: {MAX_SCORE})\n")
    top = MAX_DIMENSIONS * MAX_SCORE
    if kind == "ebnf":
        totals = 2 * len(f"Score 1: {top}\n")
    else:  # regex: the terms, then a two-digit total
        totals = 2 * len(f"Score 1: {'+'.join([str(MAX_SCORE)] * MAX_DIMENSIONS)}=99\n")
    return MAX_DIMENSIONS * line + totals + max(len(v) for v in _VERDICTS.values())


def grammar_for(kind: str) -> Grammar | None:
    """The grammar of a `PIGREWARD_GRAMMAR` value (off: None)."""
    if kind == "off":
        return None
    if kind == "ebnf":
        return Grammar("ebnf", ebnf())
    if kind == "regex":
        return Grammar("regex", regex())
    raise ValueError(f"unknown grammar {kind!r}: off, ebnf or regex")


@lru_cache(maxsize=4)
def ebnf(max_dimensions: int = MAX_DIMENSIONS) -> str:
    """An xgrammar/GBNF grammar whose states are (dimension lines so far, running total 1, total 2).

    `a{k}_{s1}_{s2}`: a line's first score is next; `c…`: its second; `n…`: another line or `t{s1}_{s2}`,
    the totals and the verdict those sums imply.
    """
    scores = range(1, MAX_SCORE + 1)
    rules = {
        "root": "head a0_0_0",
        "head": 'name ": " reason " (Score 1: "',
        "name": f"[A-Za-z] [A-Za-z ,&/'-]{{0,{NAME_CHARS - 1}}}",
        "reason": f"[A-Za-z] [^\\x00-\\x1f\\x7f()<>\\[\\]{{}}0-9:]{{0,{REASON_CHARS - 1}}}",
    }
    todo = [(0, 0, 0)]
    while todo:
        k, s1, s2 = todo.pop()
        a = f"a{k}_{s1}_{s2}"
        if a in rules:
            continue
        rules[a] = " | ".join(f'"{v}" c{k}_{s1 + v}_{s2}' for v in scores)
        for t1 in (s1 + v for v in scores):
            rules[f"c{k}_{t1}_{s2}"] = (
                '", Score 2: " (' + " | ".join(f'"{v})\\n" n{k + 1}_{t1}_{s2 + v}' for v in scores) + ")"
            )
            for t2 in (s2 + v for v in scores):
                n, t = f"n{k + 1}_{t1}_{t2}", f"t{t1}_{t2}"
                if t not in rules:
                    verdict = _VERDICTS["tie" if t1 == t2 else ("1" if t1 > t2 else "2")]
                    rules[t] = f'"Score 1: {t1}\\nScore 2: {t2}\\n{verdict}"'
                if n not in rules:
                    rules[n] = f"head a{k + 1}_{t1}_{t2} | {t}" if k + 1 < max_dimensions else t
                    if k + 1 < max_dimensions:
                        todo.append((k + 1, t1, t2))
    return "".join(f"{lhs} ::= {rhs}\n" for lhs, rhs in rules.items())


@lru_cache(maxsize=4)
def regex(max_dimensions: int = MAX_DIMENSIONS) -> str:
    """The released shape as one regular expression (lengths bounded; arithmetic left to the parser)."""
    name = rf"[A-Za-z][A-Za-z ,&/'-]{{0,{NAME_CHARS - 1}}}"
    reason = rf"[A-Za-z][^\x00-\x1f\x7f()<>\[\]{{}}0-9:]{{0,{REASON_CHARS - 1}}}"
    score = f"[1-{MAX_SCORE}]"
    line = rf"{name}: {reason} \(Score 1: {score}, Score 2: {score}\)\n"
    total = rf"{score}(\+{score}){{0,{max_dimensions - 1}}}=[0-9]{{1,2}}"
    verdict = "(" + "|".join(_VERDICTS.values()) + ")"
    return rf"({line}){{1,{max_dimensions}}}Score 1: {total}\nScore 2: {total}\n{verdict}"
