"""The verdict token: where a protocol's answer states the winner, which returned token wrote it, and
what the LVLM backend makes of its log-probabilities (with the server's, without, after a repair)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import pytest

from core.enums import Outcome, Winner
from workers.backends.lvlm import LVLMBackend
from workers.budget import TokenCounter
from workers.generation import (
    ChatMessage,
    Generation,
    GenerationRequest,
    ModelIdentity,
    TextPart,
    TokenLogprob,
)
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.protocols import get_protocol
from workers.protocols.pigreward_v1 import PigrewardV1
from workers.schemas import ContextData, JudgeResult
from workers.verdict_tokens import covering_token, verdict_probability

# -- where the verdict's digit is ------------------------------------------------------------------------

BODY_1 = (  # Image 1 leads, 7 to 5
    "Warm palette: Image 1 glows with amber light. (Score 1: 4, Score 2: 2)\n"
    "Soft focus: both are sharp. (Score 1: 3, Score 2: 3)\n"
    "Score 1: 4+3=7\n"
    "Score 2: 2+3=5\n"
)
BODY_2 = BODY_1.replace("Score 1: 4, Score 2: 2", "Score 1: 2, Score 2: 4").replace(
    "Score 1: 4+3=7\nScore 2: 2+3=5", "Score 1: 2+3=5\nScore 2: 4+3=7"
)
BODY_TIE = BODY_1.replace("Score 1: 4, Score 2: 2", "Score 1: 3, Score 2: 3").replace(
    "Score 1: 4+3=7\nScore 2: 2+3=5", "Score 1: 3+3=6\nScore 2: 3+3=6"
)


def _marked(body: str, tail: str) -> tuple[str, int]:
    """The answer `body + tail` and the offset of the digit marked `^` in `tail` (the mark removed)."""
    return body + tail.replace("^", ""), len(body) + tail.index("^")


@pytest.mark.parametrize(
    ("body", "tail"),
    [
        (BODY_1, "Image ^1 is better"),
        (BODY_2, "Image ^2 is better"),
        (BODY_2, "Image ^2 is better."),
        (BODY_1, "**Verdict:** Image ^1"),
        (BODY_2, "Final answer: Image ^2"),
        (BODY_1, "Therefore, Image ^1 is better."),
        (BODY_2, "The winner is Image ^2"),
        (BODY_1, "Image ^1 is better than Image 2"),
        (BODY_2, "- **Image ^2 is better**"),
        (BODY_1, "Image ^1 is better (7 vs 5)."),
        (BODY_1, "Image ^1 is better (Image 1: 7, Image 2: 5)"),
        (BODY_2, "### Final verdict: Image ^2 wins, because image 2 is warmer"),
        (BODY_1, "Based on image 1 and its amber light, Image ^1 is better"),
        (BODY_2, "Image 2 is better\n\nVerdict: Image ^2"),  # the last verdict line counts
        (BODY_1, "Image ^1 is better<|im_end|>"),
        (BODY_1, "Image ^1 is better\n<|im_end|>\n"),
    ],
)
def test_pigreward_v1_finds_the_digit_of_the_last_verdict_line(body: str, tail: str) -> None:
    text, expected = _marked(body, tail)
    proto = get_protocol("pigreward-v1")
    assert proto.parse(Generation(text=text, finish_reason="stop")).outcome == Outcome.valid, text
    assert proto.verdict_offset(text) == expected
    assert text[expected] in "12"


def test_pigreward_v1_offsets_are_in_the_text_as_written() -> None:
    """CRLF line ends and a byte-order mark move no offset: they are the text's characters too."""
    proto = get_protocol("pigreward-v1")
    text, expected = _marked("\ufeff" + BODY_2.replace("\n", "\r\n"), "**Winner:** Image ^2")
    assert proto.verdict_offset(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        BODY_TIE + "It is a tie",  # a tie names no image
        BODY_1 + "Image 2 is better",  # contradicts the totals: invalid
        BODY_1,  # no verdict: invalid
        "Image 1 is better",  # no dimensions: invalid
        "",
    ],
)
def test_pigreward_v1_has_no_verdict_digit_for_ties_and_invalid_answers(text: str) -> None:
    assert get_protocol("pigreward-v1").verdict_offset(text) is None


def test_json_v1_states_its_winner_in_no_token() -> None:
    """json-v1's winner follows from the totals of every score: no single token to read."""
    proto = get_protocol("json-v1")
    text = '{"dimensions":[{"name":"Warmth","reason":"amber","score_1":4,"score_2":2}],"summary":"warm"}'
    assert proto.parse(Generation(text=text, finish_reason="stop")).winner == Winner.A
    assert proto.verdict_offset(text) is None
    assert not proto.states_verdict_in_one_token and get_protocol("pigreward-v1").states_verdict_in_one_token


# -- which token covers it ---------------------------------------------------------------------------------


def _tokens(*pieces: str | tuple[str, float, dict[str, float]]) -> list[TokenLogprob]:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(TokenLogprob(token=piece, logprob=-0.1))
        else:
            out.append(TokenLogprob(token=piece[0], logprob=piece[1], top_logprobs=piece[2]))
    return out


def test_the_covering_token_is_found_by_laying_the_tokens_end_to_end() -> None:
    tokens = _tokens("Score", " 1", ":", " 7", "\n", "Image", " ", "2", " is", " better")
    text = "".join(t.token for t in tokens)
    assert covering_token(tokens, text, text.index("2")) is tokens[7]
    assert covering_token(tokens, text, text.index("7")) is tokens[3]
    assert covering_token(tokens, text, text.index(" 7")) is tokens[3]  # the token's leading space
    assert covering_token(tokens, text, 0) is tokens[0]
    assert covering_token(tokens, text, len(text) - 1) is tokens[-1]
    assert covering_token(tokens, text, len(text)) is None and covering_token(tokens, text, -1) is None
    assert covering_token([], text, 3) is None


def test_tokens_that_do_not_spell_the_text_are_trusted_only_up_to_where_they_stop_matching() -> None:
    # half of a multi-byte character decoded on its own: the tokens no longer spell the text there
    tokens = _tokens("Warm", " \ufffd", "\ufffd", " light", "\n", "Image", " ", "1", " is", " better")
    text = "Warm \U0001f3c0 light\nImage 1 is better"
    assert "".join(t.token for t in tokens) != text
    assert covering_token(tokens, text, text.index("1")) is tokens[7]  # from the end
    assert covering_token(tokens, text, 1) is tokens[0]  # from the start
    assert covering_token(tokens, text, text.index("\U0001f3c0")) is None  # in neither run
    # an end-of-turn token the text leaves out: the run from the start still finds the digit
    ended = _tokens("Image", " ", "2", " is", " better", "<|im_end|>")
    assert covering_token(ended, "Image 2 is better", 6) is ended[2]
    # nothing matches at either end: no token
    assert covering_token(_tokens("Imgae", " 2", " is", " bettr"), "Image 2 is better", 6) is None


def test_the_verdict_probability_is_p1_against_p2_at_the_verdict_token() -> None:
    p1, p2 = math.log(0.6), math.log(0.2)
    text = "Image 1 is better"
    tokens = _tokens("Image", " ", ("1", p1, {"1": p1, "2": p2, " the": math.log(0.1)}), " is", " better")
    found = verdict_probability(tokens, text, 6)
    assert found is not None
    token, p_image_1 = found
    assert p_image_1 == pytest.approx(0.75)
    assert token.token == "1" and token.logprob == p1 and token.top_logprobs["2"] == p2

    # " 2" with its alternatives spelled with spaces: stripped before comparing
    text = "Image 2 is better"
    tokens = _tokens("Image", (" 2", p1, {" 2": p1, " 1": p2}), " is", " better")
    found = verdict_probability(tokens, text, 6)
    assert found is not None and found[1] == pytest.approx(0.25)
    assert found[0].token == " 2"

    # the other digit is not among the alternatives: the stated one has it all
    tokens = _tokens("Image", " ", ("2", -0.01, {"2": -0.01, "<|im_end|>": -5.0}), " is", " better")
    found = verdict_probability(tokens, text, 6)
    assert found is not None and found[1] == 0.0


@pytest.mark.parametrize(
    ("tokens", "text", "offset"),
    [
        (None, "Image 1 is better", 6),  # the server returned none
        ([], "Image 1 is better", 6),
        (_tokens("Image", " ", "1", " is", " better"), "Image 1 is better", None),  # a tie: no offset
        (_tokens("Image", " ", "1", " is", " better"), "Image 1 is better", 0),  # not a digit
        (_tokens("Imgae", " 1", " is", " bettr"), "Image 1 is better", 6),  # not found
        (_tokens("Image", " ", ("1.", -0.1, {"2.": -3.0})), "Image 1.", 6),  # "1." in one token
    ],
)
def test_no_verdict_probability_where_it_cannot_be_read(
    tokens: list[TokenLogprob] | None, text: str, offset: int | None
) -> None:
    assert verdict_probability(tokens, text, offset) is None


# -- the LVLM backend --------------------------------------------------------------------------------------


def _image(shade: int) -> NormalizedImage:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 40, 255 - shade)).save(buf, format="PNG")
    return normalize(buf.getvalue(), f"mem://{shade}.png", ImageLimits())


A, B = _image(200), _image(30)


def _tokenized(text: str, p_image_1: float | None = None) -> list[TokenLogprob]:
    """One token per character of `text`; the verdict digit (of the last "Image N") with the
    alternatives p("1") = p_image_1 and p("2") = 1 - p_image_1."""
    tokens = [TokenLogprob(token=c, logprob=-0.5) for c in text]
    digit = max(text.rfind("Image 1"), text.rfind("Image 2")) + len("Image ")
    if p_image_1 is not None:
        alternatives = {"1": math.log(p_image_1), "2": math.log(1 - p_image_1)}
        tokens[digit] = TokenLogprob(
            token=text[digit], logprob=alternatives[text[digit]], top_logprobs=alternatives
        )
    return tokens


class _Engine:
    """Answers judge requests with queued generations; records every request."""

    def __init__(self, answers: Sequence[Generation]) -> None:
        self.answers = list(answers)
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            if r.role == "reasoner":
                out.append(Generation(text="likes warm light", finish_reason="stop"))
            else:
                out.append(self.answers.pop(0))
        return out

    def identity(self, role: Literal["judge", "reasoner"]) -> ModelIdentity:
        return ModelIdentity("stub", "r1")

    def context_length(self, role: Literal["judge", "reasoner"]) -> int | None:
        return 32768

    def close(self) -> None:
        pass


class _Count(TokenCounter):
    exact = True

    def tokens(self, request: GenerationRequest) -> int:
        return 100


def _backend(engine: _Engine, protocol: PigrewardV1 | None = None, top_logprobs: int = 5) -> LVLMBackend:
    return LVLMBackend(
        "sglang",
        engine,
        protocol or get_protocol("pigreward-v1"),
        counter=_Count(),
        top_logprobs=top_logprobs,
    )


CONTEXT = ContextData(rationales=["likes warm light"])


def test_judge_requests_ask_for_logprobs_and_the_verdict_token_sets_p_image_1() -> None:
    text = BODY_2 + "Image 2 is better"
    engine = _Engine([Generation(text=text, finish_reason="stop", logprobs=_tokenized(text, 0.2))])
    backend = _backend(engine)
    result = backend.judge(CONTEXT, "a harbour", A, B)
    assert [r.top_logprobs for r in engine.requests] == [5]
    assert result.outcome == Outcome.valid and result.winner == Winner.B
    assert result.p_source == "logprobs" and result.p_image_1 == pytest.approx(0.2)
    assert result.verdict_token is not None and result.verdict_token.token == "2"
    assert result.verdict_token.top_logprobs == {"1": math.log(0.2), "2": math.log(0.8)}


def test_reasoner_requests_never_ask_for_logprobs() -> None:
    from workers.schemas import ReferenceExample

    engine = _Engine([])
    _backend(engine).build_context([ReferenceExample("a red barn", A, B)])
    assert [(r.role, r.top_logprobs) for r in engine.requests] == [("reasoner", 0)]


@pytest.mark.parametrize(
    "answer",
    [
        Generation(text=BODY_1 + "Image 1 is better", finish_reason="stop"),  # no logprobs returned
        Generation(  # logprobs that do not spell the text anywhere near the verdict
            text=BODY_1 + "Image 1 is better",
            finish_reason="stop",
            logprobs=[TokenLogprob(token="something else", logprob=-1.0)],
        ),
        Generation(  # a tie: no digit
            text=BODY_TIE + "It is a tie",
            finish_reason="stop",
            logprobs=[TokenLogprob(token=c, logprob=-0.1) for c in BODY_TIE + "It is a tie"],
        ),
        Generation(
            text="Image 1 is better", finish_reason="stop", logprobs=_tokenized("Image 1 is better", 0.9)
        ),
    ],
    ids=["no-logprobs", "not-found", "tie", "invalid"],
)
def test_without_a_readable_verdict_token_the_three_fields_stay_none(answer: Generation) -> None:
    result = _backend(_Engine([answer])).judge(CONTEXT, "a harbour", A, B)
    assert (result.p_image_1, result.p_source, result.verdict_token) == (None, None, None)


def test_top_logprobs_zero_asks_for_none_and_json_v1_never_asks() -> None:
    text = BODY_1 + "Image 1 is better"
    engine = _Engine([Generation(text=text, finish_reason="stop")])
    result = _backend(engine, top_logprobs=0).judge(CONTEXT, "a harbour", A, B)
    assert engine.requests[0].top_logprobs == 0 and result.p_image_1 is None

    answer = '{"dimensions":[{"name":"Warmth","reason":"amber","score_1":4,"score_2":2}],"summary":"warm"}'
    engine = _Engine([Generation(text=answer, finish_reason="stop")])
    backend = LVLMBackend("sglang", engine, get_protocol("json-v1"), counter=_Count(), top_logprobs=5)
    result = backend.judge(CONTEXT, "a harbour", A, B)
    assert engine.requests[0].top_logprobs == 0 and result.winner == Winner.A and result.p_image_1 is None


class _Repairing(PigrewardV1):
    """pigreward-v1 with one follow-up request for an invalid answer (json-v1's repair, for this test)."""

    def repair(
        self, request: GenerationRequest, gen: Generation, result: JudgeResult
    ) -> GenerationRequest | None:
        follow_up = (*request.messages, ChatMessage("user", (TextPart("Answer again."),)))
        return replace(request, messages=follow_up, top_logprobs=0)


def test_a_repaired_answer_reads_the_follow_up_generations_logprobs() -> None:
    bad = "Image 1 is better"  # no dimensions: invalid, repaired
    good = BODY_2 + "Image 2 is better"
    engine = _Engine(
        [
            Generation(text=bad, finish_reason="stop", logprobs=_tokenized(bad, 0.99)),
            Generation(text=good, finish_reason="stop", logprobs=_tokenized(good, 0.3)),
        ]
    )
    result = _backend(engine, _Repairing()).judge(CONTEXT, "a harbour", A, B)
    assert result.usage["repairs"] == 1 and result.winner == Winner.B
    assert [r.top_logprobs for r in engine.requests] == [5, 5]  # the follow-up asks too
    assert result.p_image_1 == pytest.approx(0.3) and result.p_source == "logprobs"

    # the follow-up came back without logprobs: none, even though the first answer had some
    engine = _Engine(
        [
            Generation(text=bad, finish_reason="stop", logprobs=_tokenized(bad, 0.99)),
            Generation(text=good, finish_reason="stop"),
        ]
    )
    result = _backend(engine, _Repairing()).judge(CONTEXT, "a harbour", A, B)
    assert result.winner == Winner.B and result.p_image_1 is None and result.verdict_token is None
