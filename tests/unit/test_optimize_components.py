"""Prompt optimization's pure parts: modifier vocabulary, rewriters, image generators, ImageStore.put."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from core.errors import (
    BackendRejected,
    BackendUnavailable,
    ForbiddenLocation,
    ImageNotReady,
    ImageTooLarge,
    ImageUnreadable,
    PermanentError,
    TransientError,
)
from ops.stack import free_port
from tests.support.fake_images import MODEL, fake_image_server
from workers.backends.lite import LiteBackend
from workers.backends.openai_http import HTTPEngineConfig, OpenAIHTTPEngine
from workers.drawing import ATTRIBUTES, DrawParams, draw_image
from workers.features import FEATURE_KEYS, FEATURES
from workers.imaging import ImageLimits, normalize
from workers.optimization import (
    DRAW_TARGETS,
    MODIFIERS,
    ExternalGenerator,
    Feedback,
    ImageGenerator,
    LLMRewriter,
    ModifierRewriter,
    OpenAIImageGenerator,
    ProceduralGenerator,
    Rewriter,
    parse_modifiers,
    strip_modifiers,
)
from workers.optimization.generators import draw_params, render_png
from workers.optimization.rewriters import context_preferences, dimension_feature, parse_rewrites
from workers.schemas import ContextData, ReferenceExample
from workers.store import ImageStore, StoreConfig

BASE = "a quiet harbour at dawn"
WARM, COOL = MODIFIERS["warmth"]
SIZE = 64

# ----------------------------------------------------------------------------------------- helpers


def _normalized(params: DrawParams) -> Any:
    buf = io.BytesIO()
    draw_image(params, SIZE).save(buf, format="PNG")
    return normalize(buf.getvalue(), f"mem://{params.model_dump_json()}", ImageLimits())


def _warmth_context(prefer_warm: bool, n: int = 12, seed: int = 0) -> ContextData:
    """A lite context from drawn pairs where the user always chose the warmer (or the cooler) image;
    every other attribute is random."""
    rng = np.random.default_rng(seed)
    refs = []
    for _ in range(n):
        a, b = (
            DrawParams(
                seed=int(rng.integers(1_000_000)), **dict(zip(ATTRIBUTES, rng.uniform(size=6), strict=True))
            )
            for _ in range(2)
        )
        if abs(a.warmth - b.warmth) < 0.3:
            b = b.model_copy(update={"warmth": 0.95 if a.warmth < 0.5 else 0.05})
        warmer, cooler = (a, b) if a.warmth > b.warmth else (b, a)
        chosen, rejected = (warmer, cooler) if prefer_warm else (cooler, warmer)
        refs.append(ReferenceExample("a harbour", _normalized(chosen), _normalized(rejected)))
    return LiteBackend().build_context(refs)


@pytest.fixture(scope="module")
def warm_ctx() -> ContextData:
    return _warmth_context(prefer_warm=True)


@pytest.fixture(scope="module")
def cool_ctx() -> ContextData:
    return _warmth_context(prefer_warm=False)


def _proposals(rewriter: Rewriter, ctx: ContextData, feedback=(), round_index: int = 0, seeds=range(5)):  # type: ignore[no-untyped-def]
    return [p for s in seeds for p in rewriter.propose(BASE, ctx, list(feedback), 20, round_index, s)]


def _count(phrase: str, prompts: list[str]) -> int:
    return sum(phrase in p for p in prompts)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture()
def store(root: Path) -> ImageStore:
    return ImageStore(StoreConfig(image_root=root))


def _warmth_of(png: bytes) -> float:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return float((rgb[..., 0] - rgb[..., 2]).mean())


# -------------------------------------------------------------------------------------- modifiers


def test_every_feature_has_a_more_and_a_less_phrase() -> None:
    assert set(MODIFIERS) == set(FEATURE_KEYS)
    phrases = [p for pair in MODIFIERS.values() for p in pair]
    assert all(p.strip() and p == p.strip() for p in phrases)
    assert len(set(phrases)) == 2 * len(FEATURE_KEYS)
    assert MODIFIERS["warmth"] == ("warm golden light", "cool blue tones")
    for phrase, (attribute, target) in DRAW_TARGETS.items():
        assert phrase in phrases and attribute in ATTRIBUTES and 0.0 <= target <= 1.0
    for key, (more, less) in MODIFIERS.items():  # when a feature is drawable, "more" draws higher
        if more in DRAW_TARGETS:
            assert DRAW_TARGETS[more][0] == DRAW_TARGETS[less][0], key
            assert DRAW_TARGETS[more][1] > DRAW_TARGETS[less][1], key
    assert {DRAW_TARGETS[MODIFIERS[k][0]][0] for k in ("warmth", "detail", "centre_focus")} == {
        "warmth",
        "clutter",
        "centering",
    }


@pytest.mark.parametrize("phrase", [p for pair in MODIFIERS.values() for p in pair])
def test_each_phrase_round_trips(phrase: str) -> None:
    prompt = f"{BASE}, {phrase}"
    expected = {DRAW_TARGETS[phrase][0]: DRAW_TARGETS[phrase][1]} if phrase in DRAW_TARGETS else {}
    assert parse_modifiers(prompt) == expected
    assert parse_modifiers(prompt.upper()) == expected
    assert strip_modifiers(prompt) == BASE
    assert strip_modifiers(f"{phrase}, {BASE}") == BASE


def test_parse_and_strip_several_phrases() -> None:
    prompt = f"{BASE}, Warm Golden Light; centered subject, high contrast, cool blue tones"
    # later phrases win, contrast has no drawing attribute, case does not matter
    assert parse_modifiers(prompt) == {"centering": 0.9, "warmth": 0.1}
    assert strip_modifiers(prompt) == BASE
    assert parse_modifiers("a cat with warm golden light and a dog") == {"warmth": 0.9}
    assert strip_modifiers("a cat with warm golden light and a dog") == "a cat and a dog"
    assert strip_modifiers("a cat, off center subject, in the rain") == "a cat, in the rain"
    # words that merely contain a phrase are not the phrase
    assert parse_modifiers("a cat, non-warm golden light, asymmetric composition") == {"symmetry": 0.1}
    assert strip_modifiers("  Times Square at night; neon  ") == "Times Square at night; neon"
    assert parse_modifiers(BASE) == {} and strip_modifiers(WARM) == ""


# ------------------------------------------------------------------------------ modifier rewriter


def test_modifier_rewriter_follows_the_lite_users_warmth(
    warm_ctx: ContextData, cool_ctx: ContextData
) -> None:
    w = dict(zip(warm_ctx.payload["features"], warm_ctx.payload["weights"], strict=True))
    assert w["warmth"] > 0 and abs(w["warmth"]) == max(abs(v) for v in w.values())
    rewriter = ModifierRewriter()
    warm_props, cool_props = _proposals(rewriter, warm_ctx), _proposals(rewriter, cool_ctx)
    assert len(warm_props) == len(cool_props) == 100
    assert _count(WARM, warm_props) >= 60 and _count(COOL, warm_props) <= 5
    assert _count(COOL, cool_props) >= 60 and _count(WARM, cool_props) <= 5


def test_modifier_rewriter_proposals_are_distinct_bounded_and_seeded(warm_ctx: ContextData) -> None:
    rewriter = ModifierRewriter()
    base = f"{BASE}, {COOL}"  # modifiers already in the base prompt are replaced, not stacked
    props = rewriter.propose(base, warm_ctx, [], 30, 0, 7)
    assert len(props) == 30 and len({p.casefold() for p in props}) == 30 and base not in props
    phrases = {p for pair in MODIFIERS.values() for p in pair}
    for p in props:
        assert p.startswith(BASE + ", ")
        mods = p[len(BASE) + 2 :].split(", ")
        assert 1 <= len(mods) <= 4 and set(mods) <= phrases
        assert strip_modifiers(p) == BASE
    assert rewriter.propose(base, warm_ctx, [], 30, 0, 7) == props
    assert rewriter.propose(base, warm_ctx, [], 30, 0, 8) != props
    assert rewriter.propose(base, warm_ctx, [], 0, 0, 7) == []
    # more than the sampler finds at random still works: the rest is enumerated
    assert len(set(rewriter.propose(BASE, warm_ctx, [], 400, 0, 1))) == 400


def test_feedback_boosts_a_weak_dimensions_modifier(warm_ctx: ContextData) -> None:
    prefs = context_preferences(warm_ctx)
    weakest = min(prefs, key=lambda k: abs(prefs[k]))
    feature = next(f for f in FEATURES if f.key == weakest)
    preferred = MODIFIERS[weakest][0 if prefs[weakest] > 0 else 1]
    rewriter = ModifierRewriter()
    losing = Feedback(f"{BASE}, {WARM}", won=False, weak_dimensions=(feature.title,), reasons=("flat",))
    winning = Feedback(f"{BASE}, {WARM}, {preferred}", won=True, weak_dimensions=(feature.title,))
    before = _count(preferred, _proposals(rewriter, warm_ctx, round_index=1))
    after = _count(preferred, _proposals(rewriter, warm_ctx, [losing], round_index=1))
    assert after >= before + 25, (weakest, before, after)
    # weak dimensions of WINNING candidates do not boost anything
    assert _proposals(rewriter, warm_ctx, [winning], round_index=1) == _proposals(
        rewriter, warm_ctx, round_index=1
    )


def test_exploration_falls_with_the_round(warm_ctx: ContextData) -> None:
    rewriter = ModifierRewriter()
    first = _count(WARM, _proposals(rewriter, warm_ctx, round_index=0))
    later = _count(WARM, _proposals(rewriter, warm_ctx, round_index=5))
    assert later > first


@pytest.mark.parametrize(
    ("name", "key"),
    [
        *((f.title, f.key) for f in FEATURES),
        ("warm palette", "warmth"),
        ("Lighting warmth", "warmth"),
        ("Colour vibrancy", "saturation"),
        ("Use of colour", "colourfulness"),
        ("Brightness and mood", "brightness"),
        ("Level of detail", "detail"),
        ("Subject framing", "centre_focus"),
        ("centre_focus", "centre_focus"),
        ("Storytelling", None),
    ],
)
def test_dimension_names_map_to_features(name: str, key: str | None) -> None:
    assert dimension_feature(name) == key


def test_lvlm_context_rationales_give_the_direction() -> None:
    ctx = ContextData(
        rationales=[
            "The user picked the image with cool blue tones and a minimal, uncluttered scene.",
            "Again the cooler, sparser picture won; they seem to dislike busy compositions.",
            "This person does not like warm light.",
        ]
    )
    prefs = context_preferences(ctx)
    assert prefs["warmth"] < 0 and prefs["detail"] < 0
    props = _proposals(ModifierRewriter(), ctx)
    assert len(props) == 100
    assert _count(COOL, props) >= 40 and _count(WARM, props) <= 5
    assert _count(MODIFIERS["detail"][1], props) >= 40
    assert _count(MODIFIERS["detail"][0], props) <= 5
    # no signal at all still proposes k distinct rewrites (random directions)
    empty = ModifierRewriter().propose(BASE, ContextData(rationales=[]), [], 10, 0, 0)
    assert len(set(empty)) == 10


# ---------------------------------------------------------------------------------- LLM rewriter


class _ChatState:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answer = ""
        self.finish_reason = "stop"


@contextmanager
def _chat_server() -> Iterator[tuple[str, _ChatState]]:
    """A tiny OpenAI-compatible chat server answering `state.answer`."""
    state = _ChatState()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, payload: Any) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802
            self._send({"data": [{"id": "tiny-text-model"}]})

        def do_POST(self) -> None:  # noqa: N802
            state.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            message = {"role": "assistant", "content": state.answer}
            self._send({"choices": [{"index": 0, "message": message, "finish_reason": state.finish_reason}]})

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_parse_rewrites_strips_the_decorations() -> None:
    text = (
        "<think>the user likes warm light</think>\n"
        "Here are three rewrites:\n\n"
        '1. "A harbour at dawn, warm golden light"\n'
        "2) **A harbour bathed in amber dawn light**\n"
        "- Rewrite 3: 'a misty harbour, centered subject'\n"
        "* A harbour, 5 boats\n"
    )
    assert parse_rewrites(text) == [
        "A harbour at dawn, warm golden light",
        "A harbour bathed in amber dawn light",
        "a misty harbour, centered subject",
        "A harbour, 5 boats",
    ]
    assert parse_rewrites(text, drop_last=True)[-1] == "a misty harbour, centered subject"


def test_llm_rewriter_parses_dedupes_and_tops_up(warm_ctx: ContextData) -> None:
    feedback = [
        Feedback(f"{BASE}, {COOL}", won=False, weak_dimensions=("Warm palette",), reasons=("too blue",)),
        Feedback(f"{BASE}, {WARM}", won=True, weak_dimensions=()),
    ]
    with _chat_server() as (url, state):
        engine = OpenAIHTTPEngine(HTTPEngineConfig(judge_url=url, max_attempts=1))
        try:
            rewriter = LLMRewriter(engine)
            state.answer = (
                "Here are 4 rewrites:\n"
                '1. "A quiet harbour at dawn, warm golden light"\n'
                "2) **A harbour at sunrise in amber light**\n"
                "3. a quiet harbour at dawn, WARM golden light\n"  # duplicate (case)
                f"4. {BASE}\n"  # the base prompt itself
            )
            props = rewriter.propose(BASE, warm_ctx, feedback, 4, 2, 11)
            assert props[:2] == [
                "A quiet harbour at dawn, warm golden light",
                "A harbour at sunrise in amber light",
            ]
            assert len(props) == 4 and len({p.casefold() for p in props}) == 4 and BASE not in props
            assert all(p.startswith(BASE + ", ") for p in props[2:])  # ModifierRewriter's top-up

            body = state.bodies[-1]
            assert body["model"] == "tiny-text-model" and body["seed"] == (11 * 1_000_003 + 2) % 2**31
            user = body["messages"][-1]["content"]
            assert warm_ctx.rationales[0] in user and f"Prompt to rewrite: {BASE}" in user
            assert "weaker on: Warm palette" in user and "too blue" in user and "exactly 4" in user
            assert f'"{BASE}, {WARM}": PREFERRED' in user

            state.answer = "\n".join(f"{i}. harbour variant {i}" for i in range(1, 8))
            assert rewriter.propose(BASE, warm_ctx, [], 5, 0, 0) == [
                f"harbour variant {i}" for i in range(1, 6)
            ]

            state.finish_reason = "length"  # cut off: the last line is not trusted
            state.answer = "1. harbour variant one\n2. harbour vari"
            props = rewriter.propose(BASE, warm_ctx, [], 3, 0, 0)
            assert props[0] == "harbour variant one" and "harbour vari" not in props and len(set(props)) == 3
        finally:
            engine.close()


# ------------------------------------------------------------------------------------ generators


def test_procedural_generator_draws_the_modifiers(store: ImageStore, root: Path) -> None:
    gen = ProceduralGenerator(store, size=SIZE)
    assert isinstance(gen, ImageGenerator)
    for seed in (0, 1, 2):
        warm_uri = gen.generate(f"{BASE}, {WARM}", seed, f"file://w/{seed}.png")
        cool_uri = gen.generate(f"{BASE}, {COOL}", seed, f"c/{seed}.png")
        assert (warm_uri, cool_uri) == (f"file://w/{seed}.png", f"c/{seed}.png")
        assert _warmth_of(store.read(warm_uri)) > _warmth_of(store.read(cool_uri)) + 20
    a = draw_params(f"{BASE}, {WARM}", 3)
    b = draw_params(f"{BASE}, {COOL}", 3)
    assert 0.85 <= a.warmth <= 0.95 and 0.05 <= b.warmth <= 0.15 and a.seed == b.seed == 3
    assert a.model_dump(exclude={"warmth"}) == b.model_dump(exclude={"warmth"})  # only warmth moved
    gen.generate(f"{BASE}, {WARM}", 5, "again/1.png")
    gen.generate(f"{BASE}, {WARM}", 5, "again/2.png")
    assert (root / "again/1.png").read_bytes() == (root / "again/2.png").read_bytes()
    assert (root / "again/1.png").read_bytes() == render_png(f"{BASE}, {WARM}", 5, SIZE)
    assert (root / "again/1.png").read_bytes() != render_png(f"{BASE}, {WARM}", 6, SIZE)
    with pytest.raises(ForbiddenLocation):
        gen.generate(BASE, 0, "../outside.png")
    assert not (root.parent / "outside.png").exists()


def test_openai_image_generator_over_http(store: ImageStore, root: Path) -> None:
    with fake_image_server() as (url, state):
        gen = OpenAIImageGenerator(url, store, size="64x64", backoff_s=0.01)
        try:
            assert gen.generate(f"{BASE}, {WARM}", 4, "gen/a.png") == "gen/a.png"
            assert (root / "gen/a.png").read_bytes() == render_png(f"{BASE}, {WARM}", 4, 64)
            assert state.bodies[-1] == {
                "model": MODEL,
                "prompt": f"{BASE}, {WARM}",
                "n": 1,
                "size": "64x64",
                "response_format": "b64_json",
                "seed": 4,
            }

            state.calls, state.fail_first = 0, 2  # two 503s, then success within 3 attempts
            assert gen.generate(BASE, 1, "gen/b.png") == "gen/b.png" and state.calls == 3

            state.calls, state.fail_first = 0, 5
            with pytest.raises(BackendUnavailable):
                gen.generate(BASE, 1, "gen/c.png")
            assert state.calls == 3 and not (root / "gen/c.png").exists()

            state.calls, state.fail_first, state.fail_status = 0, 1, 400
            with pytest.raises(BackendRejected):
                gen.generate(BASE, 1, "gen/d.png")
            assert state.calls == 1

            state.fail_first, state.not_image = 0, True
            with pytest.raises(ImageUnreadable) as err:
                gen.generate(BASE, 1, "gen/e.png")
            assert isinstance(err.value, PermanentError) and not (root / "gen/e.png").exists()
        finally:
            gen.close()

        state.not_image, state.no_models = False, True  # no model listing: no "model" in the body
        bare = OpenAIImageGenerator(url + "/v1", store, size="32x32")
        try:
            bare.generate(BASE, 2, "gen/f.png")
            assert "model" not in state.bodies[-1] and state.bodies[-1]["size"] == "32x32"
        finally:
            bare.close()

    dead = OpenAIImageGenerator(f"http://127.0.0.1:{free_port()}", store, model="m", backoff_s=0.01)
    with pytest.raises(BackendUnavailable):
        dead.generate(BASE, 0, "gen/g.png")
    dead.close()


def test_external_generator_waits_for_the_file(store: ImageStore, root: Path) -> None:
    gen = ExternalGenerator(store)
    with pytest.raises(ImageNotReady) as err:
        gen.generate(BASE, 0, "file://ext/0.png")
    assert isinstance(err.value, TransientError) and err.value.code == "image_not_ready"
    (root / "ext").mkdir()
    (root / "ext/0.png").write_bytes(render_png(BASE, 0, 32))
    assert gen.generate(BASE, 0, "file://ext/0.png") == "file://ext/0.png"
    with pytest.raises(ForbiddenLocation):
        gen.generate(BASE, 0, "../ext/0.png")


# ------------------------------------------------------------------------------------ store.put


def test_store_put_files(tmp_path: Path, root: Path) -> None:
    store = ImageStore(StoreConfig(image_root=root, max_bytes=100))
    assert store.put("file://a/b/c.png", b"one") == "file://a/b/c.png"
    assert store.read("a/b/c.png") == b"one"
    assert store.put("a/b/c.png", b"two") == "a/b/c.png"  # overwrite
    assert (root / "a/b/c.png").read_bytes() == b"two"
    assert store.put(str(root / "abs.png"), b"abs") == str(root / "abs.png")
    assert os.listdir(root / "a/b") == ["c.png"]  # no temporary files left behind
    for escape in (
        "../escape.png",
        "file://../escape.png",
        str(tmp_path / "escape.png"),
        "a/../../escape.png",
    ):
        with pytest.raises(ForbiddenLocation):
            store.put(escape, b"x")
    assert not (tmp_path / "escape.png").exists()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ForbiddenLocation):
        store.put("link/escape.png", b"x")
    assert not (tmp_path / "escape.png").exists()
    with pytest.raises(ForbiddenLocation):
        store.put("http://example.com/x.png", b"x")
    with pytest.raises(ForbiddenLocation):
        store.put("a/b", b"x")  # a folder
    with pytest.raises(ImageTooLarge):
        store.put("big.png", b"x" * 101)
    assert not (root / "big.png").exists()


def test_store_put_s3_against_seaweedfs(root: Path, seaweed_endpoint: str, new_bucket: Any) -> None:
    gen, missing = new_bucket("gen"), f"missing-{uuid.uuid4().hex[:8]}"  # `missing` is never created
    config = StoreConfig(
        image_root=root,
        s3_endpoint_url=seaweed_endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        allowed_buckets=(gen, missing),
    )
    store = ImageStore(config)
    assert store.put(f"s3://{gen}/run/1.png", b"png-bytes") == f"s3://{gen}/run/1.png"
    assert store.read(f"s3://{gen}/run/1.png") == b"png-bytes"
    assert store.put(f"s3://{gen}/run/1.png", b"png-bytes-2") == f"s3://{gen}/run/1.png"  # overwrites
    assert store.read(f"s3://{gen}/run/1.png") == b"png-bytes-2"
    uri = ProceduralGenerator(store, size=32).generate(f"{BASE}, {WARM}", 1, f"s3://{gen}/run/2.png")
    assert store.read(uri) == render_png(f"{BASE}, {WARM}", 1, 32)
    with pytest.raises(ForbiddenLocation):
        store.put(f"s3://other-{gen}/x.png", b"x")  # not in the allow-list
    with pytest.raises(ForbiddenLocation):
        store.put(f"s3://{missing}/x.png", b"x")  # allowed but does not exist
    with pytest.raises(ForbiddenLocation):
        store.put(f"s3://{gen}", b"x")  # no key
    with pytest.raises(ImageTooLarge):
        store.put(f"s3://{gen}/run/big.png", b"x" * (config.max_bytes + 1))
    with pytest.raises(ImageNotReady):
        ExternalGenerator(store).generate(BASE, 0, f"s3://{gen}/run/3.png")
    store.put(f"s3://{gen}/run/3.png", render_png(BASE, 0, 32))
    assert ExternalGenerator(store).generate(BASE, 0, f"s3://{gen}/run/3.png") == f"s3://{gen}/run/3.png"
    listed = store.s3.list_objects_v2(Bucket=gen, Prefix="run/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["run/1.png", "run/2.png", "run/3.png"]  # nothing else


def test_b64_payload_of_fake_server_is_an_image() -> None:
    """The fake server's answer decodes to the same picture ProceduralGenerator draws."""
    with fake_image_server() as (url, state):
        r = httpx.post(
            url + "/v1/images/generations", json={"prompt": f"{BASE}, {WARM}", "seed": 2, "size": "48x48"}
        )
        png = base64.b64decode(r.json()["data"][0]["b64_json"])
        assert Image.open(io.BytesIO(png)).size == (48, 48)
        assert png == render_png(f"{BASE}, {WARM}", 2, 48) and len(state.bodies) == 1
