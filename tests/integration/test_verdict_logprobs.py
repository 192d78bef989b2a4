"""Verdict log-probabilities over real HTTP: the `sglang` client against our own OpenAI-compatible server
(`ops/openai_server.py`) running a tiny random Qwen2-VL in the `hf` engine.

- asked for, the server returns one entry per answer token, whose texts spell the answer and whose
  log-probabilities are at most 0; a server started without them (`ServerOptions(logprobs=False)`)
  answers the same text with none;
- the LVLM backend's result for a valid answer carries the verdict token and P(Image 1) from it when
  the server returns log-probabilities, and none of the three fields when it does not;
- a judgment run by the pipeline stores the verdict token and a confidence from it, or, from a server
  without log-probabilities, a confidence from the score margin (the documented fallback rule).

A random model rarely writes a valid verdict, so the judge's answers are constrained by a regular
expression that fixes the scores and the verdict ("Image 1 is better") and leaves the model the
dimension's name and reason, in ASCII letters (no character split over tokens).
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from core.enums import Outcome, Winner
from models.db import make_engine, session_scope, upgrade
from models.judgments import JudgmentSpec, get_judgment, record_judgments
from models.references import add_reference
from models.tenants import ensure_tenant
from models.users import ensure_user
from ops.openai_server import ServerOptions, create_app
from ops.stack import free_port
from tests.support.tiny_vlm import build_tiny_vlm
from workers.backends.hf import HFEngine
from workers.backends.hf_config import HFEngineConfig
from workers.backends.lvlm import LVLMBackend
from workers.backends.openai_http import HTTPEngineConfig, OpenAIHTTPEngine
from workers.confidence import P_FLOOR, token_probability
from workers.drawing import DrawParams, draw_image
from workers.generation import Generation, GenerationRequest, Grammar, Sampling
from workers.imaging import ImageLimits, ImageLoader, NormalizedImage, normalize
from workers.pipeline import Resources, run_judgment
from workers.protocols.pigreward_v1 import PigrewardV1
from workers.schemas import ContextData, VerdictToken
from workers.store import ImageStore, StoreConfig

pytestmark = pytest.mark.slow  # a tiny VLM behind two real servers, a few constrained generations

VERDICT_REGEX = (
    r"[A-Za-z][A-Za-z ]{0,30}: [A-Za-z][A-Za-z ]{0,60} \(Score 1: 4, Score 2: 2\)\n"
    r"Score 1: 4\nScore 2: 2\nImage 1 is better"
)
PROTOCOL = PigrewardV1(None, Grammar("regex", VERDICT_REGEX))
LOOP_CONTROL = Sampling(presence_penalty=1.5, frequency_penalty=0.5)
CONTEXT = ContextData(rationales=["This user prefers warm light.", "They like sparse scenes."])


def _image(warmth: float, seed: int) -> NormalizedImage:
    buf = io.BytesIO()
    params = DrawParams(
        warmth=warmth, saturation=0.5, brightness=0.5, clutter=0.3, centering=0.5, symmetry=0.5, seed=seed
    )
    draw_image(params, size=96).save(buf, "PNG")
    return normalize(buf.getvalue(), f"img{seed}", ImageLimits(pixel_budget=112 * 112))


WARM, COLD = _image(0.8, 1), _image(0.2, 2)


class _Served:
    """An app on a free port in this process, for the block."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL of a server returning log-probabilities, URL of one started without), one engine behind both."""
    model_dir = build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", "qwen2_vl")
    engine = HFEngine(HFEngineConfig(judge_model=str(model_dir)))
    engine.identity("judge")  # loaded before the first request
    served = {str(model_dir): "judge"}
    limits = ImageLimits(pixel_budget=112 * 112)
    with_logprobs = create_app(engine, served, limits, ServerOptions())  # type: ignore[arg-type]
    without = create_app(engine, served, limits, ServerOptions(logprobs=False))  # type: ignore[arg-type]
    try:
        with _Served(with_logprobs) as on, _Served(without) as off:
            yield on, off
    finally:
        engine.close()


class _Recording(OpenAIHTTPEngine):
    """The HTTP engine, keeping every generation it got."""

    def __init__(self, config: HTTPEngineConfig) -> None:
        super().__init__(config)
        self.generations: list[Generation] = []

    def _complete(self, request: GenerationRequest) -> Generation:
        gen = super()._complete(request)
        self.generations.append(gen)
        return gen


def _engine(url: str) -> _Recording:
    return _Recording(HTTPEngineConfig(judge_url=url, read_timeout_s=120))


def test_the_server_returns_each_answer_tokens_logprobs_only_when_it_has_them(
    servers: tuple[str, str],
) -> None:
    on, off = servers
    request = PROTOCOL.judge_request(CONTEXT.rationales, "a harbour", WARM, COLD, LOOP_CONTROL)
    request = replace(request, top_logprobs=5)
    with_logprobs, without = _engine(on), _engine(off)
    try:
        [gen] = with_logprobs.generate([request])
        [plain] = without.generate([request])
    finally:
        with_logprobs.close()
        without.close()
    assert PROTOCOL.parse(gen).outcome == Outcome.valid, gen.text
    assert gen.logprobs is not None
    assert "".join(t.token for t in gen.logprobs) == gen.text
    assert all(t.logprob <= 0 for t in gen.logprobs)
    assert all(1 <= len(t.top_logprobs) <= 5 and max(t.top_logprobs.values()) <= 0 for t in gen.logprobs)
    # switched off: the same answer, no log-probabilities
    assert plain.text == gen.text and plain.logprobs is None


def test_the_backend_reads_the_verdict_token_when_the_server_returns_logprobs(
    servers: tuple[str, str],
) -> None:
    on, off = servers
    results = {}
    for name, url in (("on", on), ("off", off)):
        engine = _engine(url)
        backend = LVLMBackend("sglang", engine, PROTOCOL, judge_sampling=LOOP_CONTROL, top_logprobs=5)
        try:
            results[name] = (backend.judge(CONTEXT, "a lighthouse", WARM, COLD), engine.generations[-1])
        finally:
            backend.close()
    (result, gen), (fallback, plain) = results["on"], results["off"]
    assert result.outcome == Outcome.valid and result.winner == Winner.A, result.raw_text
    assert result.p_source == "logprobs" and result.verdict_token is not None
    assert result.verdict_token.token.strip() == "1"
    assert result.p_image_1 is not None and 0.0 <= result.p_image_1 <= 1.0
    assert result.p_image_1 == pytest.approx(token_probability(result.verdict_token, "1"))
    # the token is the answer's own: the one that wrote the verdict line's digit
    offset = PROTOCOL.verdict_offset(gen.text)
    assert offset is not None and gen.logprobs is not None
    start = 0
    for token in gen.logprobs:
        if start <= offset < start + len(token.token):
            assert token.token == result.verdict_token.token
            assert token.logprob == result.verdict_token.logprob
        start += len(token.token)
    # the same answer from a server without log-probabilities: the confidence falls back to the margin
    assert (
        fallback.outcome == Outcome.valid and fallback.raw_text == result.raw_text and plain.logprobs is None
    )
    assert (fallback.p_image_1, fallback.p_source, fallback.verdict_token) == (None, None, None)


@pytest.mark.parametrize("server", ["on", "off"])
def test_the_pipeline_stores_the_verdict_logprobs_or_falls_back_to_the_margin(
    servers: tuple[str, str], tmp_path: Path, server: str
) -> None:
    """A judgment run by the pipeline over real HTTP: with log-probabilities the ledger keeps the verdict
    token and a confidence from it; without, the confidence comes from the score margin (documented rule)."""
    on, off = servers
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    for name, image in (("warm.png", WARM), ("cold.png", COLD)):
        image.image.save(tmp_path / name)
    engine = _engine(on if server == "on" else off)
    backend = LVLMBackend(
        "sglang",
        engine,
        PROTOCOL,
        judge_sampling=LOOP_CONTROL,
        reasoner_sampling=Sampling(max_tokens=8),
        top_logprobs=5,
    )
    res = Resources(
        db=make_engine(url),
        loader=ImageLoader(ImageStore(StoreConfig(image_root=tmp_path)), ImageLimits(pixel_budget=112 * 112)),
        backend_for=lambda name, protocol=None: backend,
    )
    with session_scope(res.db) as session:
        tenant = ensure_tenant(session=session, name="default")
        user = ensure_user(session=session, tenant_id=tenant.id, external_id="u")  # type: ignore[arg-type]
        add_reference(
            session=session, user_id=user.id, prompt="p", chosen_uri="warm.png", rejected_uri="cold.png"
        )  # type: ignore[arg-type]
        [jid] = record_judgments(
            session=session,
            specs=[
                JudgmentSpec(
                    tenant="default",
                    user="u",
                    prompt="a lighthouse",
                    image_a="warm.png",
                    image_b="cold.png",
                    backend="sglang",
                    options={"swap": False},
                )
            ],
        )
    try:
        summary = run_judgment(res=res, judgment_id=jid, token="t")
    finally:
        backend.close()
    assert summary.status == "done", summary
    with session_scope(res.db) as session:
        row = get_judgment(session=session, judgment_id=jid)
    assert row is not None and row.winner == Winner.A and row.confidence is not None
    signals = row.confidence_signals or {}
    assert row.confidence == row.confidence_raw == signals["p_raw"] and row.calibration_version is None
    if server == "on":
        assert signals["source"] == "logprobs"
        [token] = signals["verdict_tokens"]
        assert token["token"].strip() == "1" and token["logprob"] <= 0 and token["top_logprobs"]
        p_token = token_probability(VerdictToken(**token), "1")
        assert p_token is not None
        assert row.confidence == pytest.approx(min(p_token, 1 - P_FLOOR), abs=1e-6)  # kept off 0 and 1
    else:
        assert signals["source"] == "margin" and signals["verdict_tokens"] == []
        assert row.confidence == pytest.approx(
            1 / (1 + math.exp(-(4 - 2))), abs=1e-6
        )  # 4 vs 2 on one dimension
