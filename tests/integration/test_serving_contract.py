"""The serving contract over real HTTP: `pigreward serve` runs a tiny random Qwen2-VL as SGLang would.

- every request (reasoner, judge, regenerated rationale) carries every decoding field, as the server
  parsed it (our server echoes what it applied; SGLang does not);
- a user with 15 rationales of 256 tokens never gets a 400 at a 4,096-token context: the worker counts
  with the judge's tokenizer and leaves the oldest rationales out, recorded on the result;
- with the `ebnf` grammar the random model's answers are 100% parseable `pigreward-v1` over 50 judgments;
- `pigreward check` reports template, images, parsing, decoding, cached tokens and context length, and
  fails naming the template when the server's chat template refuses images.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.enums import Outcome
from core.errors import BackendRejected
from ops.stack import REPO, model_server
from tests.support.tiny_vlm import build_tiny_vlm
from workers.backends.lvlm import LVLMBackend
from workers.backends.openai_http import HTTPEngineConfig, OpenAIHTTPEngine
from workers.generation import Generation, GenerationRequest, Sampling
from workers.probe import probe_images
from workers.protocols import get_protocol
from workers.schemas import ContextData, ReferenceExample

pytestmark = pytest.mark.slow  # a tiny VLM behind a real server, ~100 generations

# loop control for a random model: penalties keep it from repeating a phrase, the grammar does the rest
# (max_tokens: the shipped 512, which the grammar raises to the longest answer it admits)
LOOP_CONTROL = Sampling(presence_penalty=1.5, frequency_penalty=0.5)

TEXT_ONLY_TEMPLATE = """\
{%- for message in messages -%}
{%- if message.content is not string -%}{%- for part in message.content -%}
{%- if part.type == 'image' -%}{{ raise_exception('this chat template takes text only') }}{%- endif -%}
{%- endfor -%}{%- endif -%}
<|im_start|>{{ message.role }}
{% if message.content is string %}{{ message.content }}{% else %}{% for part in message.content %}\
{{ part.text }}{% endfor %}{% endif %}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", "qwen2_vl")


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with model_server(model_dir, log, "--context-length", "4096", "--enable-cache-report") as url:
        yield url


class RecordingEngine(OpenAIHTTPEngine):
    """The HTTP engine, keeping every (request, generation) pair it sent and got."""

    def __init__(self, config: HTTPEngineConfig) -> None:
        super().__init__(config)
        self.calls: list[tuple[GenerationRequest, Generation]] = []

    def _complete(self, request: GenerationRequest) -> Generation:
        gen = super()._complete(request)
        self.calls.append((request, gen))
        return gen


def _backend(url: str, model_dir: Path, grammar: str = "off", **kwargs: object) -> LVLMBackend:
    engine = RecordingEngine(HTTPEngineConfig(judge_url=url, max_in_flight=16))
    return LVLMBackend(
        "sglang",
        engine,
        get_protocol("pigreward-v1", None, grammar),
        tokenizer=str(model_dir),
        **kwargs,  # type: ignore[arg-type]
    )


def test_every_request_carries_every_decoding_field(server: str, model_dir: Path) -> None:
    judge = Sampling(
        max_tokens=40, top_k=7, min_p=0.05, repetition_penalty=1.1, frequency_penalty=0.3, stop=("\n\n\n",)
    )
    reasoner = Sampling(max_tokens=8, presence_penalty=0.4, seed=3)
    backend = _backend(server, model_dir, judge_sampling=judge, reasoner_sampling=reasoner)
    a, b, c, d = probe_images(448 * 448)
    context = backend.build_context(
        [ReferenceExample("a red barn", a, b), ReferenceExample("a quiet lake", c, d)]
    )
    backend.judge(context, "a lighthouse", a, b)
    engine = backend.engine
    assert isinstance(engine, RecordingEngine)
    roles = [request.role for request, _ in engine.calls]
    # two rationales, each cut off at 8 tokens and asked again with 16, then one judgment
    assert roles.count("reasoner") == 4 and roles.count("judge") >= 1
    assert {r.sampling.max_tokens for r, _ in engine.calls if r.role == "reasoner"} == {8, 16}
    for request, gen in engine.calls:
        assert gen.applied == request.sampling.record(request.grammar), request.role
    assert set(engine.calls[-1][1].applied or {}) >= {
        "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty",
        "presence_penalty", "stop", "max_tokens", "seed", "grammar",
    }  # fmt: skip
    # the stored record is what was sent, and contexts left out what was cut off twice
    assert backend.decoding == judge.record()
    assert context.rationales == [] and context.payload["rationales_left_out"] == 2
    assert context.payload["decoding"] == reasoner.record()


def test_fifteen_long_rationales_never_overflow_a_4096_context(server: str, model_dir: Path) -> None:
    backend = _backend(server, model_dir, judge_sampling=Sampling(max_tokens=512))
    tokenizer = backend.counter.tokenizer  # type: ignore[attr-defined]
    words = [
        "warm",
        "amber",
        "light",
        "over",
        "calm",
        "water",
        "the",
        "user",
        "chose",
        "softer",
        "colour",
        "and",
        "quiet",
        "space",
    ]
    rationales = []
    for i in range(15):  # 256 tokens each, counted with the judge's tokenizer
        text = " ".join(words[(i + j) % len(words)] for j in range(400))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:256]
        rationales.append(f"ref{i:02d} " + tokenizer.decode(ids))
    context = ContextData(rationales=rationales)
    a, b, _, _ = probe_images(448 * 448)
    assert backend.context_length() == 4096  # what the server reports as max_model_len

    # sent whole, the server refuses it: the overflow is real
    whole = backend.protocol.judge_request(rationales, "a harbour at dawn", a, b, backend.judge_sampling)
    with pytest.raises(BackendRejected, match="maximum context length of 4096"):
        backend.engine.generate([whole])

    for first, second in ((a, b), (b, a)):  # both orders, as a swapped judgment sends them
        result = backend.judge(context, "a harbour at dawn", first, second)
        assert result.raw_text  # the model answered (a random model's answer is usually invalid)
        assert result.usage["rationales_dropped"] > 0
        assert result.usage["rationales_used"] == 15 - result.usage["rationales_dropped"]
        assert result.usage["prompt_tokens"] == result.usage["prompt_tokens_counted"]
        assert result.usage["prompt_tokens"] + 512 <= 4096
    engine = backend.engine
    assert isinstance(engine, RecordingEngine)
    sent = engine.calls[-1][0]
    text = "".join(p.text for m in sent.messages for p in m.parts if hasattr(p, "text"))
    assert "ref14 " in text and "ref00 " not in text  # the most recent kept, the oldest left out


def test_with_the_grammar_fifty_answers_are_all_parseable(server: str, model_dir: Path) -> None:
    backend = _backend(server, model_dir, grammar="ebnf", judge_sampling=LOOP_CONTROL)
    context = ContextData(rationales=["This user prefers warm light.", "They like sparse scenes."])
    images = probe_images(448 * 448)
    prompts = [f"scene number {i}: a harbour, a field, a street" for i in range(50)]

    def one(i: int) -> tuple[Outcome, str | None, str]:
        r = backend.judge(context, prompts[i], images[i % 4], images[(i + 1) % 4])
        return r.outcome, r.invalid_reason, r.raw_text

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(50)))
    bad = [(reason, text[:200]) for outcome, reason, text in results if outcome != Outcome.valid]
    assert not bad, bad
    assert backend.decoding["grammar"].startswith("ebnf:") and backend.decoding["max_tokens"] == 1182


def _check(url: str, model_dir: Path, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pigreward.cli", "check", "--backend", "sglang"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PIGREWARD_DATA_DIR": str(tmp),
            "PIGREWARD_SGLANG_URL": url,
            "PIGREWARD_TOKENIZER": str(model_dir),
            "PIGREWARD_REASONER_MAX_TOKENS": "16",
            **env,
        },
    )


def test_check_sends_a_real_judgment_and_reports_it(server: str, model_dir: Path, tmp_path: Path) -> None:
    done = _check(
        server,
        model_dir,
        tmp_path,
        PIGREWARD_GRAMMAR="ebnf",
        PIGREWARD_PRESENCE_PENALTY="1.5",
        PIGREWARD_FREQUENCY_PENALTY="0.5",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in (
        "ok   template and images A,B: accepted",
        "ok   template and images B,A: accepted",
        "ok   answer A,B: parsed: winner",
        "ok   answer B,A: parsed: winner",
        "ok   decoding echoed A,B: as sent",
        "cached tokens A,B: reported:",
        "context length: 4096 tokens; worst case (15 rationales of 32 tokens",
        "counted with the judge's tokenizer",
        "probe: the backend judges as configured",
    ):
        assert line in out, out
    assert "presence_penalty=1.5" in out and "grammar=ebnf:" in out


def test_check_fails_naming_a_template_that_refuses_images(model_dir: Path, tmp_path: Path) -> None:
    template = tmp_path / "text_only.jinja"
    template.write_text(TEXT_ONLY_TEMPLATE, encoding="utf-8")
    with model_server(model_dir, tmp_path / "server.log", "--chat-template", str(template)) as url:
        done = _check(url, model_dir, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL reasoner: the server's chat template" in done.stdout
    assert str(template) in done.stdout and "takes text only" in done.stdout
    assert "probe: FAILED" in done.stdout
