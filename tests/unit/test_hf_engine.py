"""The in-process `hf` engine on tiny random Qwen-VL models: batching, shared prefix, grammar, loading."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from core.errors import BackendRejected
from tests.support.tiny_vlm import build_tiny_vlm
from workers.backends.hf import HFEngine, _Model, resolve_checkpoint
from workers.backends.hf_config import HFEngineConfig
from workers.drawing import DrawParams, draw_image
from workers.generation import Sampling
from workers.imaging import ImageLimits, normalize
from workers.protocols import get_protocol
from workers.protocols.json_v1 import validate


def _image(warmth: float, seed: int):  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    params = DrawParams(
        warmth=warmth, saturation=0.5, brightness=0.5, clutter=0.3, centering=0.5, symmetry=0.5, seed=seed
    )
    draw_image(params, size=96).save(buf, "PNG")
    return normalize(buf.getvalue(), f"img{seed}", ImageLimits(pixel_budget=112 * 112))


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def model_dir(request, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return build_tiny_vlm(tmp_path_factory.mktemp(request.param) / "m", request.param)


def _requests(n: int, max_tokens: int = 24):  # type: ignore[no-untyped-def]
    proto = get_protocol("pigreward-v1")
    rationales = ["This user prefers warm amber light and sparse, calm compositions."] * 6
    return [
        proto.judge_request(
            rationales,
            f"scene {i} " * (i + 1),
            _image(0.1 * i, i),
            _image(0.9 - 0.1 * i, 20 + i),
            Sampling(max_tokens=max_tokens),
        )
        for i in range(n)
    ]


def test_shared_prefix_and_static_cache_give_the_same_tokens_as_plain_generate(model_dir: Path) -> None:
    reqs = _requests(3)
    plain = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir), shared_prefix=False)).run(reqs)
    shared = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir), shared_prefix=True)).run(reqs)
    static = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir), static_cache=True)).run(reqs)
    assert [g.text for g in shared] == [g.text for g in plain] == [g.text for g in static]
    assert shared[0].usage["cached_tokens"] > 0.5 * shared[0].usage["prompt_tokens"]
    assert "cached_tokens" not in plain[0].usage


def test_batched_generation_equals_one_at_a_time(model_dir: Path) -> None:
    model = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir)))
    reqs = _requests(3)
    assert [g.text for g in model.run(reqs)] == [model.run([r])[0].text for r in reqs]
    assert all(g.finish_reason in ("stop", "length") for g in model.run(reqs))


def test_engine_batches_concurrent_callers_and_reports_identity(model_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = HFEngine(
        HFEngineConfig(judge_model=str(model_dir), reasoner_model=None, max_batch=8, batch_wait_s=0.2)
    )
    reqs = _requests(4, max_tokens=8)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: engine.generate([r])[0], reqs))
    assert len(results) == 4 and all(r.usage["completion_tokens"] >= 1 for r in results)
    ident = engine.identity("judge")
    assert ident.model_id == str(model_dir) and ident.revision.startswith("local-")
    assert engine.identity("reasoner") == ident  # no reasoner configured: the judge reasons
    engine.close()


def test_json_schema_is_enforced_token_by_token(model_dir: Path) -> None:
    engine = HFEngine(HFEngineConfig(judge_model=str(model_dir), reasoner_model=None))
    proto = get_protocol("json-v1")
    req = proto.judge_request(
        ["likes warm light"], "a harbour", _image(0.8, 1), _image(0.2, 2), Sampling(max_tokens=1500)
    )
    [gen] = engine.generate([req])
    answer, problem = validate(gen.text)
    assert answer is not None, (problem, gen.text[:200])
    assert json.loads(gen.text, strict=False)["dimensions"]
    assert proto.parse(gen).outcome == "valid"
    engine.close()


def test_checkpoints_resolve_from_paths_and_the_hf_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = tmp_path / "hub" / "models--org--judge" / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert resolve_checkpoint(str(snap)) == (snap, "0123456789abcdef")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text('{"a": 1}')
    assert resolve_checkpoint(str(plain))[1].startswith("local-")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BackendRejected, match="never downloaded"):
        resolve_checkpoint("jeongeunnn/pigreward")


def test_the_checkpoints_generation_config_is_never_used(model_dir: Path, tmp_path: Path) -> None:
    """Decoding comes from the request's Sampling alone: a checkpoint whose generation_config.json asks
    for penalties and sampling answers exactly as one without it."""
    import shutil

    altered = tmp_path / "altered"
    shutil.copytree(model_dir, altered)
    config = json.loads((altered / "generation_config.json").read_text())
    config.update(repetition_penalty=1.8, no_repeat_ngram_size=2, do_sample=True, top_k=3, temperature=0.7)
    (altered / "generation_config.json").write_text(json.dumps(config))
    reqs = _requests(2, max_tokens=20)
    plain = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir))).run(reqs)
    other = _Model(str(altered), HFEngineConfig(judge_model=str(altered))).run(reqs)
    assert [g.text for g in other] == [g.text for g in plain]


def test_penalties_and_stop_strings_change_the_answer_as_requested(model_dir: Path) -> None:
    model = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir)))
    [base] = _requests(1, max_tokens=30)
    [plain] = model.run([base])
    penalised = base.__class__(
        messages=base.messages,
        sampling=Sampling(max_tokens=30, repetition_penalty=1.0, frequency_penalty=2.0, presence_penalty=2.0),
    )
    [other] = model.run([penalised])
    assert other.text != plain.text  # the penalties were applied
    words = [w for w in plain.text.split() if len(w) > 2]
    assert words, plain.text
    stop = words[len(words) // 2]
    stopped = base.__class__(messages=base.messages, sampling=Sampling(max_tokens=30, stop=(stop,)))
    [cut] = model.run([stopped])
    assert cut.finish_reason == "stop" and stop not in cut.text and plain.text.startswith(cut.text)


def test_ebnf_grammar_is_enforced_token_by_token(model_dir: Path) -> None:
    proto = get_protocol("pigreward-v1", None, "ebnf")
    req = proto.judge_request(
        ["likes warm light"],
        "a harbour",
        _image(0.8, 1),
        _image(0.2, 2),
        Sampling(max_tokens=1200, presence_penalty=1.5, frequency_penalty=0.5),
    )
    [gen] = HFEngine(HFEngineConfig(judge_model=str(model_dir), reasoner_model=None)).generate([req])
    assert proto.parse(gen).outcome == "valid", gen.text


def test_token_count_from_image_sizes_equals_the_encoded_length(model_dir: Path) -> None:
    model = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir)))
    for request in _requests(3):
        assert model.count(request) == len(model.encode(request)[0])


def test_logprobs_are_recorded_only_when_asked_and_change_no_token(model_dir: Path) -> None:
    """Per answer token: its own log-probability and the top alternatives, for every row that asks, in
    the same batch as rows that do not; the tokens are the same as without."""
    from dataclasses import replace

    model = _Model(str(model_dir), HFEngineConfig(judge_model=str(model_dir)))
    reqs = _requests(3, max_tokens=16)
    plain = model.run(reqs)
    asked = model.run([replace(reqs[0], top_logprobs=4), reqs[1], replace(reqs[2], top_logprobs=2)])
    assert [g.text for g in asked] == [g.text for g in plain]
    assert plain[0].logprobs is None and asked[1].logprobs is None
    for gen, k in ((asked[0], 4), (asked[2], 2)):
        assert gen.logprobs is not None and len(gen.logprobs) == gen.usage["completion_tokens"] - (
            1 if gen.finish_reason == "stop" else 0
        )
        for token in gen.logprobs:
            assert token.logprob <= 0 and 1 <= len(token.top_logprobs) <= k
            assert all(v <= 0 for v in token.top_logprobs.values())
            # greedy, no grammar: the chosen token is the most likely one
            assert token.logprob == pytest.approx(max(token.top_logprobs.values()), abs=1e-5)
        joined = "".join(t.token for t in gen.logprobs)
        if "\ufffd" not in joined:  # no multi-byte character split over tokens: they spell the text
            assert joined == gen.text
