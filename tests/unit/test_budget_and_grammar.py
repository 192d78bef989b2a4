"""The token budget's policy (pure, with a counting stand-in) and the pigreward-v1 grammars (xgrammar)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from core.errors import BackendRejected
from workers.budget import EstimateCounter, fit_rationales, margin_for
from workers.generation import ChatMessage, GenerationRequest, Sampling, TextPart
from workers.protocols.pigreward_v1_grammar import ebnf, grammar_for, regex
from workers.protocols.pigreward_v1_parser import parse


class WordCounter:
    """One token per word: enough to check which rationales the policy keeps."""

    exact = True

    def tokens(self, request: GenerationRequest) -> int:
        return sum(len(p.text.split()) for m in request.messages for p in m.parts if isinstance(p, TextPart))


def _build(prompt: str, answer: int = 10):  # type: ignore[no-untyped-def]
    def build(kept: Sequence[str]) -> GenerationRequest:
        text = " ".join(kept) + " " + prompt
        return GenerationRequest((ChatMessage("user", (TextPart(text),)),), Sampling(max_tokens=answer))

    return build


RATIONALES = [f"r{i} " + "w " * 9 for i in range(15)]  # 10 words each


def test_a_context_that_fits_is_sent_whole() -> None:
    fit = fit_rationales(RATIONALES, _build("p"), WordCounter(), 200)  # 151 + 10 + margin 18
    assert (fit.kept, fit.dropped, fit.tokens) == (15, 0, 151)


@pytest.mark.parametrize("limit", [60, 100, 151, 160, 178])
def test_the_most_recent_rationales_that_fit_are_kept(limit: int) -> None:
    fit = fit_rationales(RATIONALES, _build("p"), WordCounter(), limit)
    free = limit - 10 - margin_for(limit)  # the answer and the margin stay free
    assert fit.tokens <= free
    expected = min(15, (free - 1) // 10)  # the largest count that fits (10 words each, 1 for the prompt)
    assert fit.kept == expected and fit.dropped == 15 - expected
    text = fit.request.messages[0].parts[0].text  # type: ignore[union-attr]
    assert ("r14 " in text) == (expected > 0) and ("r0 " in text) == (expected == 15)


def test_counting_falls_back_to_the_estimate_when_it_cannot_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.tiny_vlm import build_tiny_vlm
    from workers.budget import TokenizerCounter, load_counter

    assert isinstance(load_counter(str(tmp_path / "nowhere")), EstimateCounter)
    assert isinstance(load_counter(None), EstimateCounter)
    model = build_tiny_vlm(tmp_path / "tiny")
    assert isinstance(load_counter(str(model)), TokenizerCounter)
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ raise_exception('no template here') }}")
    assert isinstance(load_counter(str(model), broken), EstimateCounter)  # a fine-tune without a template


def test_a_prompt_that_cannot_fit_even_alone_is_refused_clearly() -> None:
    with pytest.raises(BackendRejected, match="context length of 20 tokens"):
        fit_rationales(RATIONALES, _build("word " * 15), WordCounter(), 20)


def test_the_estimate_counts_images_from_their_size() -> None:
    from workers.generation import ImagePart
    from workers.probe import probe_images

    [img, *_] = probe_images(448 * 448)
    one = GenerationRequest((ChatMessage("user", (TextPart("ab" * 50),)),), Sampling())
    assert EstimateCounter().tokens(one) == 50 + 10
    digits = GenerationRequest((ChatMessage("user", (TextPart("ab12猫"),)),), Sampling())
    assert EstimateCounter().tokens(digits) == 1 + 2 + 1 + 10  # digits and CJK: one token each
    assert img.image.size == (224, 224)  # drawn at 224 px, inside the pixel budget
    with_image = GenerationRequest((ChatMessage("user", (ImagePart(img),)),), Sampling())
    assert EstimateCounter().tokens(with_image) == (224 // 28) ** 2 + 2 + 10


ANSWER = """Warm palette: Image one glows with amber light. (Score 1: 4, Score 2: 2)
Calm space: both keep the scene sparse. (Score 1: 3, Score 2: 3)
Score 1: 7
Score 2: 5
Image 1 is better"""


@pytest.fixture(scope="module")
def compiler(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import xgrammar as xgr

    from bench.random_vlm import build_tokenizer

    tokenizer = build_tokenizer(tmp_path_factory.mktemp("tok"))
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    return xgr, xgr.GrammarCompiler(info)


def _accepts(compiler, grammar, text: str) -> bool:  # type: ignore[no-untyped-def]
    xgr, comp = compiler
    compiled = comp.compile_grammar(grammar) if grammar.startswith("root") else comp.compile_regex(grammar)
    matcher = xgr.GrammarMatcher(compiled)
    return bool(matcher.accept_string(text)) and matcher.is_completed()


def test_ebnf_admits_the_format_with_its_arithmetic_only(compiler) -> None:  # type: ignore[no-untyped-def]
    assert parse(ANSWER).outcome == "valid"
    assert _accepts(compiler, ebnf(), ANSWER)
    assert not _accepts(compiler, ebnf(), ANSWER.replace("Score 1: 7", "Score 1: 8"))  # wrong total
    assert not _accepts(compiler, ebnf(), ANSWER.replace("Image 1 is better", "Image 2 is better"))
    assert not _accepts(compiler, ebnf(), ANSWER.replace("Score 2: 3)", "Score 2: 6)"))  # off the scale
    assert not _accepts(compiler, ebnf(), ANSWER + "\nImage 1 is better")  # nothing after the verdict
    six = "\n".join([ANSWER.splitlines()[1]] * 6)
    assert not _accepts(compiler, ebnf(), six + "\nScore 1: 18\nScore 2: 18\nIt is a tie")  # 6 lines


def test_regex_admits_the_released_shape_with_its_sums(compiler) -> None:  # type: ignore[no-untyped-def]
    released = ANSWER.replace("Score 1: 7", "Score 1: 4+3=7").replace("Score 2: 5", "Score 2: 2+3=5")
    assert parse(released).outcome == "valid"
    assert _accepts(compiler, regex(), released)
    assert not _accepts(compiler, regex(), released.replace("amber", "amber " * 60))  # reason too long
    assert grammar_for("off") is None
    assert grammar_for("ebnf").label.startswith("ebnf:")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown grammar"):
        grammar_for("json")


def test_the_longest_answer_a_grammar_admits_fits_its_token_budget(compiler) -> None:  # type: ignore[no-untyped-def]
    from workers.protocols import get_protocol
    from workers.protocols.pigreward_v1_grammar import NAME_CHARS, REASON_CHARS, max_chars

    line = f"{'N' * NAME_CHARS}: {'r' * REASON_CHARS} (Score 1: 5, Score 2: 4)"
    longest = "\n".join([line] * 5) + "\nScore 1: 25\nScore 2: 20\nImage 1 is better"
    assert _accepts(compiler, ebnf(), longest)
    assert len(longest) <= max_chars("ebnf")
    assert not _accepts(compiler, ebnf(), longest.replace("N: ", "NN: ", 1))  # a name too long
    sampling = get_protocol("pigreward-v1", None, "ebnf").judge_sampling(Sampling(max_tokens=512))
    assert sampling.max_tokens > max_chars("ebnf")  # every token writes at least one character
    assert get_protocol("pigreward-v1").judge_sampling(Sampling(max_tokens=512)).max_tokens == 512
