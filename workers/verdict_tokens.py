"""The verdict token of an answer: which returned token wrote the winner's digit, and what it says.

A protocol knows where, in the answer's text, the digit stating the winner is (`verdict_offset`); the
server returns one log-probability entry per answer token (`Generation.logprobs`). The token that
covers that character is found by laying the tokens' texts end to end. Its alternatives give
P(Image 1) = p("1") / (p("1") + p("2")) at that position (`workers.confidence.token_probability`).

Positions are trusted only where the tokens spell the text exactly: from its start up to the first
token that differs, or from its end back to the last one that differs (a token the server decoded on
its own as U+FFFD, half of a multi-byte character, breaks the match; an end-of-turn token the text
leaves out does too). A digit outside both runs has no verdict token.
"""

from __future__ import annotations

from collections.abc import Sequence

from workers.confidence import token_probability
from workers.generation import TokenLogprob
from workers.schemas import VerdictToken


def covering_token(tokens: Sequence[TokenLogprob], text: str, offset: int) -> TokenLogprob | None:
    """The token whose text covers character `offset` of `text`, or None where the tokens do not spell
    the text around it."""
    if not 0 <= offset < len(text):
        return None
    start = 0
    for token in tokens:  # from the start
        end = start + len(token.token)
        if text[start:end] != token.token:
            break
        if start <= offset < end:
            return token
        start = end
    end = len(text)
    for token in reversed(tokens):  # from the end
        start = end - len(token.token)
        if start < 0 or text[start:end] != token.token:
            break
        if start <= offset < end:
            return token
        end = start
    return None


def verdict_probability(
    tokens: Sequence[TokenLogprob] | None, text: str, offset: int | None
) -> tuple[VerdictToken, float] | None:
    """The verdict token at `offset` and P(Image 1) from its log-probabilities, or None: no tokens
    returned, no digit at `offset` (a tie), the token not found, or its alternatives hold neither digit
    as a whole token (written "1." in one token, say)."""
    if not tokens or offset is None or text[offset : offset + 1] not in ("1", "2"):
        return None
    token = covering_token(tokens, text, offset)
    if token is None:
        return None
    stated = text[offset]
    verdict = VerdictToken(token=token.token, logprob=token.logprob, top_logprobs=dict(token.top_logprobs))
    p_stated = token_probability(verdict, stated)  # the stated digit is always among its own token's
    if p_stated is None:
        return None
    p_image_1 = p_stated if stated == "1" else 1.0 - p_stated
    return verdict, min(1.0, max(0.0, p_image_1))
