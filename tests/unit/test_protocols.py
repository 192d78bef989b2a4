"""get_protocol, versions, request building (shared per-user prefix), rationale issues, parsing, repair."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from core.errors import InvalidRequest, PermanentError
from workers.generation import ChatMessage, Generation, GenerationRequest, ImagePart, Sampling, TextPart
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.protocols import PROTOCOLS, JsonV1, JudgeProtocol, PigrewardV1, get_protocol, json_v1
from workers.protocols.protocol import format_rationales
from workers.protocols.templates import BUILTIN_DIR
from workers.schemas import JudgeResult

SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=300, seed=7)

PIG_VALID = """The user likes warm light.
Warm palette: Image 1 has the amber light this user favours. (Score 1: 4, Score 2: 2)
Clean composition: both are tidy. (Score 1: 3, Score 2: 3)
Score 1: 4+3=7
Score 2: 2+3=5
Image 1 is better"""

PIG_B = """Warm palette: Image 2 glows. (Score 1: 2, Score 2: 5)
Detail: Image 2 is sharper. (Score 1: 3, Score 2: 4)
Score 1: 2+3=5
Score 2: 5+4=9
Image 2 is better"""

PIG_TIE = """Palette: similar. (Score 1: 3, Score 2: 3)
Score 1: 3
Score 2: 3
Tie"""


def _image(seed: int, name: str) -> NormalizedImage:
    img = Image.new("RGB", (16, 16), (seed * 40 % 256, 100, 255 - seed * 30 % 256))
    ImageDraw.Draw(img).rectangle((seed % 8, 2, seed % 8 + 5, 9), fill=(255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return normalize(buf.getvalue(), f"mem://{name}.png", ImageLimits())


@pytest.fixture(scope="module")
def imgs() -> list[NormalizedImage]:
    return [_image(i, f"img{i}") for i in range(6)]


def _json_answer(pairs: list[tuple[int, int]], summary: str = "because") -> str:
    return json.dumps(
        {
            "dimensions": [
                {"name": f"dim{i}", "reason": f"reason {i}", "score_1": a, "score_2": b}
                for i, (a, b) in enumerate(pairs)
            ],
            "summary": summary,
        }
    )


def _flat(messages: tuple[ChatMessage, ...]) -> str:
    """Messages as the byte stream a server's prefix cache sees (images by content)."""
    out = []
    for m in messages:
        out.append(f"<|{m.role}|>")
        for p in m.parts:
            out.append(p.text if isinstance(p, TextPart) else f"<img:{p.image.sha256}>")
    return "".join(out)


# -- lookup and versions -------------------------------------------------------------------------------


def test_get_protocol_returns_each_protocol() -> None:
    assert set(PROTOCOLS) == {"pigreward-v1", "json-v1"}
    pig = get_protocol("pigreward-v1")
    js = get_protocol("json-v1")
    assert isinstance(pig, PigrewardV1) and pig.name == "pigreward-v1"
    assert isinstance(js, JsonV1) and js.name == "json-v1"
    assert isinstance(pig, JudgeProtocol) and isinstance(js, JudgeProtocol)


@pytest.mark.parametrize("name", ["", "pigreward-v2", "JSON-V1", "lite"])
def test_unknown_protocol_is_invalid_request(name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        get_protocol(name)
    assert isinstance(info.value, PermanentError)
    assert info.value.code == "invalid_request"
    assert "json-v1" in info.value.message and "pigreward-v1" in info.value.message


def test_version_is_name_at_template_hashes() -> None:
    for name in PROTOCOLS:
        proto = get_protocol(name)
        prefix, _, hashes = proto.version.partition("@")
        assert prefix == name
        assert hashes == proto.judge_template.digest + proto.reasoner_template.digest
        assert len(hashes) == 16
        assert get_protocol(name).version == proto.version  # stable across instances
    assert get_protocol("pigreward-v1").version != get_protocol("json-v1").version


def _copy_builtin(dest: Path, name: str) -> Path:
    shutil.copytree(BUILTIN_DIR / name, dest / name)
    return dest / name


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
@pytest.mark.parametrize("kind", ["judge", "reasoner"])
def test_version_changes_when_a_custom_template_is_edited(tmp_path: Path, name: str, kind: str) -> None:
    folder = _copy_builtin(tmp_path, name)
    builtin = get_protocol(name).version
    assert get_protocol(name, tmp_path).version == builtin  # same content, same version
    path = folder / f"{kind}.txt"
    path.write_text(path.read_text(encoding="utf-8").replace("Image 1", "Picture 1", 1), encoding="utf-8")
    edited = get_protocol(name, tmp_path).version
    assert edited != builtin and edited.startswith(f"{name}@")
    path.write_text(path.read_text(encoding="utf-8") + "Be brief.\n", encoding="utf-8")
    assert get_protocol(name, tmp_path).version not in (builtin, edited)


def test_custom_template_is_used_in_requests(tmp_path: Path, imgs: list[NormalizedImage]) -> None:
    folder = tmp_path / "json-v1"
    folder.mkdir()
    (folder / "judge.txt").write_text(
        "### user\nTaste:\n{rationales}\nPrompt: {prompt}\n<image_1>\n<image_2>\nJSON only.", encoding="utf-8"
    )
    proto = get_protocol("json-v1", tmp_path)
    request = proto.judge_request(["likes blue"], "a boat", imgs[0], imgs[1], SAMPLING)
    assert [m.role for m in request.messages] == ["user"]
    assert _flat(request.messages).startswith("<|user|>Taste:\n1. likes blue\nPrompt: a boat\n")
    assert _flat(request.messages).endswith("JSON only.")
    # the reasoner template was not overridden: the built-in one is used
    assert proto.reasoner_template == get_protocol("json-v1").reasoner_template


# -- requests ----------------------------------------------------------------------------------------


def test_format_rationales_numbers_and_strips() -> None:
    assert (
        format_rationales(["  likes red \n", "prefers calm scenes"]) == "1. likes red\n2. prefers calm scenes"
    )
    assert format_rationales([]) == ""


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_reasoner_request(name: str, imgs: list[NormalizedImage]) -> None:
    request = get_protocol(name).reasoner_request("a misty forest", imgs[0], imgs[1], SAMPLING)
    assert isinstance(request, GenerationRequest)
    assert request.role == "reasoner"
    assert request.sampling == SAMPLING
    assert request.json_schema is None  # a rationale is free text
    images = [p.image for m in request.messages for p in m.parts if isinstance(p, ImagePart)]
    assert images == [imgs[0], imgs[1]]  # chosen, then rejected
    assert "a misty forest" in _flat(request.messages)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_judge_request(name: str, imgs: list[NormalizedImage]) -> None:
    proto = get_protocol(name)
    request = proto.judge_request(["likes red", "likes calm"], "a red barn", imgs[2], imgs[3], SAMPLING)
    assert request.role == "judge"
    if name == "json-v1":  # sized from the schema's caps, so a schema-valid answer always fits
        assert request.sampling == SAMPLING.model_copy(update={"max_tokens": json_v1.MAX_TOKENS})
        assert len(_json_answer([(5, 5)] * 5)) <= json_v1.MAX_TOKENS
    else:
        assert request.sampling == SAMPLING
    images = [p.image for m in request.messages for p in m.parts if isinstance(p, ImagePart)]
    assert images == [imgs[2], imgs[3]]
    flat = _flat(request.messages)
    assert "1. likes red\n2. likes calm" in flat
    assert flat.index("2. likes calm") < flat.index("a red barn") < flat.index(f"<img:{imgs[2].sha256}>")
    if name == "json-v1":
        assert request.json_schema == json_v1.SCHEMA
    else:
        assert request.json_schema is None


def test_json_v1_judge_request_accepts_keywords(imgs: list[NormalizedImage]) -> None:
    request = get_protocol("json-v1").judge_request(
        rationales=["x"], prompt="p", image_1=imgs[0], image_2=imgs[1], sampling=SAMPLING
    )
    assert request.json_schema == json_v1.SCHEMA and request.role == "judge"


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_judgments_of_one_user_share_a_prefix(name: str, imgs: list[NormalizedImage]) -> None:
    """Everything up to "Prompt:" is byte-identical for one user, so the server reuses its KV cache."""
    proto = get_protocol(name)
    rationales = ["Prefers warm amber light.", "Likes sparse, tidy compositions.\nDislikes clutter."]
    first = proto.judge_request(rationales, "a lighthouse at dusk", imgs[0], imgs[1], SAMPLING)
    second = proto.judge_request(
        list(rationales), "two cats on a sofa", imgs[4], imgs[5], Sampling(max_tokens=50)
    )
    a, b = _flat(first.messages), _flat(second.messages)
    assert a.count("Prompt:") == 1 and b.count("Prompt:") == 1
    prefix_a, prefix_b = a[: a.index("Prompt:")], b[: b.index("Prompt:")]
    assert prefix_a == prefix_b
    assert "1. Prefers warm amber light." in prefix_a and "Dislikes clutter." in prefix_a
    assert "<img:" not in prefix_a  # no image before the prompt
    # at message/part level too: the system message and the first user text part start identically
    assert first.messages[:-1] == second.messages[:-1]
    head_a = first.messages[-1].parts[0]
    head_b = second.messages[-1].parts[0]
    assert isinstance(head_a, TextPart) and isinstance(head_b, TextPart)
    cut = head_a.text.index("Prompt:")
    assert head_a.text[:cut] == head_b.text[:cut]
    # another user's context changes the prefix
    other = proto.judge_request(
        ["Prefers cold blue light."], "a lighthouse at dusk", imgs[0], imgs[1], SAMPLING
    )
    c = _flat(other.messages)
    assert c[: c.index("Prompt:")] != prefix_a


# -- rationales ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
@pytest.mark.parametrize(
    ("text", "finish", "expected"),
    [
        ("  The user likes warm light.\n", "stop", ("The user likes warm light.", None)),
        ("The user likes warm", "length", ("The user likes warm", "truncated")),
        ("", "stop", ("", "empty")),
        (" \n\t ", "stop", ("", "empty")),
        ("", "length", ("", "empty")),
        ("<html>bad gateway</html>", "malformed", ("", "malformed_response")),
        ("", "malformed", ("", "malformed_response")),
    ],
)
def test_rationale_issues(name: str, text: str, finish: str, expected: tuple[str, str | None]) -> None:
    assert get_protocol(name).rationale(Generation(text=text, finish_reason=finish)) == expected


# -- pigreward-v1 parsing ---------------------------------------------------------------------------


def test_pigreward_v1_parse_valid() -> None:
    gen = Generation(text=PIG_VALID, finish_reason="stop", model="m", usage={"prompt_tokens": 10})
    result = get_protocol("pigreward-v1").parse(gen)
    assert isinstance(result, JudgeResult)
    assert result.outcome == "valid" and result.winner == "A"
    assert [(d.name, d.score_a, d.score_b) for d in result.dimensions] == [
        ("Warm palette", 4, 2),
        ("Clean composition", 3, 3),
    ]
    assert result.dimensions[0].reason == "Image 1 has the amber light this user favours."
    assert (result.total_a, result.total_b) == (7, 5)
    assert result.rationale == "The user likes warm light."
    assert result.raw_text == PIG_VALID
    assert result.usage == {"prompt_tokens": 10}
    assert result.invalid_reason is None


@pytest.mark.parametrize(("text", "winner"), [(PIG_B, "B"), (PIG_TIE, "tie")])
def test_pigreward_v1_parse_winner_mapping(text: str, winner: str) -> None:
    result = get_protocol("pigreward-v1").parse(Generation(text=text, finish_reason="stop"))
    assert result.outcome == "valid" and result.winner == winner


@pytest.mark.parametrize(
    ("text", "finish", "reason"),
    [
        ("", "stop", "empty"),
        (PIG_VALID, "length", "truncated"),
        (PIG_VALID, "malformed", "malformed_response"),
        (PIG_VALID.replace("Image 1 is better", ""), "stop", "missing_verdict"),
        (PIG_VALID.replace("Image 1 is better", "Image 2 is better"), "stop", "verdict_mismatch"),
        (PIG_VALID.replace("Score 1: 4+3=7", "Score 1: 4+3=8"), "stop", "totals_mismatch"),
        ("I cannot decide.", "stop", "no_dimensions"),
    ],
)
def test_pigreward_v1_parse_invalid(text: str, finish: str, reason: str) -> None:
    gen = Generation(text=text, finish_reason=finish, usage={"completion_tokens": 3})
    result = get_protocol("pigreward-v1").parse(gen)
    assert result.outcome == "invalid"
    assert result.invalid_reason == reason
    assert result.invalid_detail
    assert result.winner is None
    assert result.raw_text == text
    assert result.usage == {"completion_tokens": 3}


# -- json-v1 parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "winner", "totals"),
    [
        ([(5, 1), (3, 3)], "A", (8, 4)),
        ([(1, 2), (4, 4), (2, 5)], "B", (7, 11)),
        ([(4, 2), (2, 4)], "tie", (6, 6)),
    ],
)
def test_json_v1_parse_winner_from_totals(pairs: list[tuple[int, int]], winner: str, totals: tuple) -> None:
    text = _json_answer(pairs, summary="warm wins")
    result = get_protocol("json-v1").parse(Generation(text=text, finish_reason="stop", usage={"x": 1}))
    assert result.outcome == "valid"
    assert result.winner == winner
    assert (result.total_a, result.total_b) == totals
    assert [(d.score_a, d.score_b) for d in result.dimensions] == pairs
    assert result.dimensions[0].name == "dim0" and result.dimensions[0].reason == "reason 0"
    assert result.rationale == "warm wins"
    assert result.raw_text == text and result.usage == {"x": 1}


def test_json_v1_parse_tolerates_whitespace_but_refuses_control_characters() -> None:
    text = '\n  {"dimensions": [{"name": "tone", "reason": "warm", "score_1": 2, "score_2": 4}],\n "summary": ""}  \n'
    result = get_protocol("json-v1").parse(Generation(text=text, finish_reason="stop"))
    assert result.outcome == "valid" and result.winner == "B"
    for field, value in (("name", "to\u0007ne"), ("reason", "line\tone\nline two"), ("summary", "a\u001bb")):
        data = json.loads(text)
        if field == "summary":
            data["summary"] = value
        else:
            data["dimensions"][0][field] = value
        bad = get_protocol("json-v1").parse(Generation(text=json.dumps(data), finish_reason="stop"))
        assert bad.outcome == "invalid" and bad.invalid_reason == "invalid_json", field
        assert "pattern" in (bad.invalid_detail or "") and field in (bad.invalid_detail or "")


def test_json_v1_schema_refuses_control_characters_and_bounds_lengths() -> None:
    name = json_v1.SCHEMA["properties"]["dimensions"]["items"]["properties"]["name"]
    assert name["pattern"].endswith("{1,40}$") and "\\x00-\\x1f" in name["pattern"]


def test_json_v1_truncated_answer_is_not_repaired(imgs: list[NormalizedImage]) -> None:
    proto = get_protocol("json-v1")
    gen = Generation(text='{"dimensions": [', finish_reason="length")
    result = proto.parse(gen)
    assert result.invalid_reason == "truncated"
    assert proto.repair(_judge(proto, imgs), gen, result) is None


def test_json_v1_winner_field_in_answer_cannot_override_totals() -> None:
    data = json.loads(_json_answer([(1, 5)]))
    data["winner"] = "Image 1"
    result = get_protocol("json-v1").parse(Generation(text=json.dumps(data), finish_reason="stop"))
    assert result.winner != "A"


@pytest.mark.parametrize(
    ("text", "finish", "reason", "detail"),
    [
        ("", "stop", "empty", None),
        ("   \n", "stop", "empty", None),
        (_json_answer([(4, 2)]), "length", "truncated", None),
        ('{"dimensions": [{"name": "a", "reas', "length", "truncated", None),
        ("<html>proxy error</html>", "malformed", "malformed_response", None),
        ("Image 1 is better.", "stop", "invalid_json", "not JSON"),
        ('```json\n{"dimensions": []}\n```', "stop", "invalid_json", "not JSON"),
        (
            '{"dimensions": [{"name": "a", "reason": "r", "score_1": 4, "score_2": 2}]',
            "stop",
            "invalid_json",
            "not JSON",
        ),
        (_json_answer([(6, 2)]), "stop", "invalid_json", "schema"),
        (_json_answer([(0, 2)]), "stop", "invalid_json", "schema"),
        (_json_answer([]), "stop", "invalid_json", "schema"),
        (_json_answer([(1, 1)] * 6), "stop", "invalid_json", "schema"),
        (_json_answer([(3, 2)]).replace('"score_1": 3', '"score_1": 3.5'), "stop", "invalid_json", "schema"),
        (_json_answer([(3, 2)]).replace('"name": "dim0"', '"name": ""'), "stop", "invalid_json", "schema"),
        (json.dumps({"summary": "no dims"}), "stop", "invalid_json", "schema"),
        ("[1, 2]", "stop", "invalid_json", "schema"),
    ],
)
def test_json_v1_parse_invalid(text: str, finish: str, reason: str, detail: str | None) -> None:
    result = get_protocol("json-v1").parse(Generation(text=text, finish_reason=finish, usage={"n": 2}))
    assert result.outcome == "invalid"
    assert result.invalid_reason == reason
    assert result.invalid_detail
    if detail:
        assert detail in result.invalid_detail
    assert result.winner is None and result.dimensions == []
    assert result.raw_text == text and result.usage == {"n": 2}


# -- repair --------------------------------------------------------------------------------------------


def _judge(proto: JudgeProtocol, imgs: list[NormalizedImage]) -> GenerationRequest:
    return proto.judge_request(["likes red"], "a red barn", imgs[0], imgs[1], SAMPLING)


@pytest.mark.parametrize(
    ("text", "finish"),
    [
        ("Image 1 is better.", "stop"),
        ("", "stop"),
        (_json_answer([(9, 9)]), "stop"),
    ],
)
def test_json_v1_repair_appends_bad_answer_and_one_follow_up(
    text: str, finish: str, imgs: list[NormalizedImage]
) -> None:
    proto = get_protocol("json-v1")
    request = _judge(proto, imgs)
    gen = Generation(text=text, finish_reason=finish)
    result = proto.parse(gen)
    assert result.outcome == "invalid"
    follow = proto.repair(request, gen, result)
    assert isinstance(follow, GenerationRequest)
    assert follow.messages[: len(request.messages)] == request.messages
    assert len(follow.messages) == len(request.messages) + 2
    assistant, user = follow.messages[-2:]
    assert assistant == ChatMessage("assistant", (TextPart(text),))
    assert user.role == "user" and len(user.parts) == 1 and isinstance(user.parts[0], TextPart)
    assert result.invalid_detail in user.parts[0].text
    assert "JSON" in user.parts[0].text
    assert follow.json_schema == json_v1.SCHEMA
    assert follow.sampling == request.sampling and follow.role == "judge"
    # the original request is left as it was
    assert request.messages == _judge(proto, imgs).messages


def test_json_v1_repair_not_for_valid_or_malformed(imgs: list[NormalizedImage]) -> None:
    proto = get_protocol("json-v1")
    request = _judge(proto, imgs)
    good = Generation(text=_json_answer([(4, 2)]), finish_reason="stop")
    assert proto.repair(request, good, proto.parse(good)) is None
    bad = Generation(text="<html/>", finish_reason="malformed")
    assert proto.repair(request, bad, proto.parse(bad)) is None


@pytest.mark.parametrize(("text", "finish"), [("nonsense", "stop"), (PIG_VALID, "length"), ("", "stop")])
def test_pigreward_v1_never_repairs(text: str, finish: str, imgs: list[NormalizedImage]) -> None:
    proto = get_protocol("pigreward-v1")
    gen = Generation(text=text, finish_reason=finish)
    result = proto.parse(gen)
    assert result.outcome == "invalid"
    assert proto.repair(_judge(proto, imgs), gen, result) is None


def test_repaired_answer_parses(imgs: list[NormalizedImage]) -> None:
    """The second answer of a repair is read like any other: a valid one gives a verdict."""
    proto = get_protocol("json-v1")
    request = _judge(proto, imgs)
    bad = Generation(text="Sure! Image 2.", finish_reason="stop")
    follow = proto.repair(request, bad, proto.parse(bad))
    assert follow is not None
    fixed = proto.parse(Generation(text=_json_answer([(2, 4)]), finish_reason="stop"))
    assert fixed.outcome == "valid" and fixed.winner == "B"
