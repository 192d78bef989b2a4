"""load_template / Template.render: sections, placeholder filling, image markers, ordering rules, overrides."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from workers.generation import ChatMessage, ImagePart, TextPart
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.protocols.templates import BUILTIN_DIR, Template, TemplateError, load_template

PROTOCOLS = ("pigreward-v1", "json-v1")
KINDS = ("judge", "reasoner")


def _image(color: tuple[int, int, int], name: str) -> NormalizedImage:
    buf = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buf, format="PNG")
    return normalize(buf.getvalue(), f"mem://{name}.png", ImageLimits())


@pytest.fixture(scope="module")
def images() -> dict[str, NormalizedImage]:
    return {
        "image_1": _image((255, 0, 0), "one"),
        "image_2": _image((0, 0, 255), "two"),
        "chosen": _image((0, 200, 0), "chosen"),
        "rejected": _image((90, 90, 90), "rejected"),
    }


def _write(base: Path, protocol: str, kind: str, text: str) -> Path:
    path = base / protocol / f"{kind}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _user_text(messages: tuple[ChatMessage, ...]) -> str:
    """The user message with images shown as [IMG:uri], to check text and image placement at once."""
    user = messages[-1]
    assert user.role == "user"
    return "".join(p.text if isinstance(p, TextPart) else f"[IMG:{p.image.uri}]" for p in user.parts)


JUDGE_OK = """### system
Be a judge.
### user
Context:
{rationales}
Prompt: {prompt}
A: <image_1>
B: <image_2>
"""

REASONER_OK = """### system
Explain.
### user
Prompt: {prompt}
Chosen: <chosen> Rejected: <rejected>"""


# -- built-in templates -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
def test_builtin_templates_load(protocol: str, kind: str) -> None:
    template = load_template(protocol, kind)
    assert isinstance(template, Template)
    assert (template.protocol, template.kind) == (protocol, kind)
    assert template.system.strip() and template.user.strip()
    assert "### " not in template.system and "### " not in template.user
    assert len(template.digest) == 8 and int(template.digest, 16) >= 0
    assert (BUILTIN_DIR / protocol / f"{kind}.txt").is_file()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_builtin_judge_renders_context_prompt_then_images(
    protocol: str, images: dict[str, NormalizedImage]
) -> None:
    template = load_template(protocol, "judge")
    messages = template.render(
        {"rationales": "1. likes red", "prompt": "a red barn"},
        {"image_1": images["image_1"], "image_2": images["image_2"]},
    )
    assert [m.role for m in messages] == ["system", "user"]
    assert len(messages[0].parts) == 1 and isinstance(messages[0].parts[0], TextPart)
    assert messages[0].parts[0].text == template.system
    image_parts = [p for p in messages[1].parts if isinstance(p, ImagePart)]
    assert [p.image for p in image_parts] == [images["image_1"], images["image_2"]]
    text = _user_text(messages)
    assert "{" + "rationales}" not in text and "{prompt}" not in text and "<image_" not in text
    assert text.index("1. likes red") < text.index("a red barn") < text.index("[IMG:mem://one.png]")
    assert text.index("[IMG:mem://one.png]") < text.index("[IMG:mem://two.png]")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_builtin_reasoner_renders_chosen_then_rejected(
    protocol: str, images: dict[str, NormalizedImage]
) -> None:
    messages = load_template(protocol, "reasoner").render(
        {"prompt": "a lighthouse"}, {"chosen": images["chosen"], "rejected": images["rejected"]}
    )
    text = _user_text(messages)
    assert "a lighthouse" in text
    assert text.index("[IMG:mem://chosen.png]") < text.index("[IMG:mem://rejected.png]")
    assert sum(isinstance(p, ImagePart) for p in messages[-1].parts) == 2


def test_literal_json_braces_in_builtin_json_template_survive(images: dict[str, NormalizedImage]) -> None:
    template = load_template("json-v1", "judge")
    assert '{"dimensions": [' in template.user
    messages = template.render(
        {"rationales": "1. x", "prompt": "p"}, {"image_1": images["image_1"], "image_2": images["image_2"]}
    )
    text = _user_text(messages)
    assert (
        '{"dimensions": [{"name": "...", "reason": "...", "score_1": n, "score_2": n}, ...], "summary": "..."}'
        in (text)
    )


# -- rendering ------------------------------------------------------------------------------------------


def test_literal_braces_in_custom_template_survive(
    tmp_path: Path, images: dict[str, NormalizedImage]
) -> None:
    _write(
        tmp_path,
        "json-v1",
        "judge",
        '### system\nAnswer {"a": 1} or {} or {Name} or {1} or {name with spaces}.\n### user\n'
        '{rationales}\nSchema: {"dimensions": [{"name": "..."}]}\n{prompt} <image_1> <image_2> {"end": true}',
    )
    template = load_template("json-v1", "judge", tmp_path)
    messages = template.render(
        {"rationales": "R", "prompt": "P"}, {"image_1": images["image_1"], "image_2": images["image_2"]}
    )
    assert messages[0].parts[0].text == 'Answer {"a": 1} or {} or {Name} or {1} or {name with spaces}.'
    assert _user_text(messages) == (
        'R\nSchema: {"dimensions": [{"name": "..."}]}\nP [IMG:mem://one.png] [IMG:mem://two.png] {"end": true}'
    )


def test_missing_value_raises_template_error(images: dict[str, NormalizedImage]) -> None:
    template = load_template("pigreward-v1", "judge")
    with pytest.raises(TemplateError, match="prompt"):
        template.render({"rationales": "1. x"}, {"image_1": images["image_1"], "image_2": images["image_2"]})


def test_missing_value_in_system_section_raises(tmp_path: Path, images: dict[str, NormalizedImage]) -> None:
    _write(
        tmp_path,
        "pigreward-v1",
        "reasoner",
        "### system\nYou are {persona}.\n" + REASONER_OK.split("\n", 2)[2],
    )
    template = load_template("pigreward-v1", "reasoner", tmp_path)
    with pytest.raises(TemplateError, match="persona"):
        template.render({"prompt": "p"}, {"chosen": images["chosen"], "rejected": images["rejected"]})
    messages = template.render(
        {"prompt": "p", "persona": "a critic"}, {"chosen": images["chosen"], "rejected": images["rejected"]}
    )
    assert messages[0].parts[0].text == "You are a critic."


def test_missing_image_raises_template_error(images: dict[str, NormalizedImage]) -> None:
    template = load_template("pigreward-v1", "judge")
    with pytest.raises(TemplateError, match="image_2"):
        template.render({"rationales": "r", "prompt": "p"}, {"image_1": images["image_1"]})
    with pytest.raises(TemplateError, match="chosen"):
        load_template("json-v1", "reasoner").render({"prompt": "p"}, {"rejected": images["rejected"]})


def test_placeholders_between_and_after_images_are_filled(
    tmp_path: Path, images: dict[str, NormalizedImage]
) -> None:
    _write(tmp_path, "json-v1", "reasoner", "### user\n<chosen> beat <rejected> for {prompt} ({style})")
    messages = load_template("json-v1", "reasoner", tmp_path).render(
        {"prompt": "a fox <image_1>", "style": "ink"},
        {"chosen": images["chosen"], "rejected": images["rejected"]},
    )
    assert _user_text(messages) == (
        "[IMG:mem://chosen.png] beat [IMG:mem://rejected.png] for a fox <image_1> (ink)"
    )


def test_values_are_inserted_verbatim_not_re_expanded(images: dict[str, NormalizedImage]) -> None:
    """A value that looks like a placeholder (or has braces / backslashes) is text, filled once."""
    template = load_template("pigreward-v1", "judge")
    rationales = '1. likes {prompt} and \\1 and {"k": 2}'
    messages = template.render(
        {"rationales": rationales, "prompt": "{rationales} \\g<0>"},
        {"image_1": images["image_1"], "image_2": images["image_2"]},
    )
    text = _user_text(messages)
    assert rationales in text
    assert "Prompt: {rationales} \\g<0>" in text


@pytest.mark.parametrize("marker", ["<image_1>", "<image_2>", "<chosen>", "<rejected>"])
def test_image_markers_inside_values_stay_text(marker: str, images: dict[str, NormalizedImage]) -> None:
    """User prompts and model-written rationales are data: a marker in them must not become an image.

    Otherwise a rationale such as "prefers <image_2>'s palette" adds an extra image to every judge
    request of that user, and "<chosen>" in a judge request crashes with a KeyError.
    """
    template = load_template("pigreward-v1", "judge")
    messages = template.render(
        {"rationales": f"1. prefers {marker} palette", "prompt": f"draw {marker}"},
        {"image_1": images["image_1"], "image_2": images["image_2"]},
    )
    image_parts = [p.image for p in messages[-1].parts if isinstance(p, ImagePart)]
    assert image_parts == [images["image_1"], images["image_2"]]
    text = _user_text(messages)
    assert f"1. prefers {marker} palette" in text and f"Prompt: draw {marker}" in text


def test_text_between_images_and_after_last_is_kept(
    tmp_path: Path, images: dict[str, NormalizedImage]
) -> None:
    _write(tmp_path, "pigreward-v1", "judge", "### user\n{rationales}|{prompt}|<image_1><image_2>|tail")
    messages = load_template("pigreward-v1", "judge", tmp_path).render(
        {"rationales": "R", "prompt": "P"}, {"image_1": images["image_1"], "image_2": images["image_2"]}
    )
    assert len(messages) == 1  # no system section: no system message
    parts = messages[0].parts
    assert [type(p) for p in parts] == [TextPart, ImagePart, ImagePart, TextPart]
    assert parts[0] == TextPart("R|P|") and parts[3] == TextPart("|tail")


def test_section_order_and_surrounding_blank_lines(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "json-v1",
        "reasoner",
        "### user\n\n" + REASONER_OK.split("### user\n")[1] + "\n\n### system\nSys\n",
    )
    template = load_template("json-v1", "reasoner", tmp_path)
    assert template.system == "Sys"
    assert template.user.startswith("Prompt: {prompt}") and template.user.endswith("<rejected>")


def test_render_is_deterministic(images: dict[str, NormalizedImage]) -> None:
    template = load_template("json-v1", "judge")
    values = {"rationales": "1. a\n2. b", "prompt": "p"}
    imgs = {"image_1": images["image_1"], "image_2": images["image_2"]}
    assert template.render(values, imgs) == template.render(dict(values), dict(imgs))


# -- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user",
    [
        "{prompt} <image_1> <image_2>",  # no rationales
        "{rationales} <image_1> <image_2>",  # no prompt
        "{rationales} {prompt} <image_2>",  # no image 1
        "{rationales} {prompt} <image_1>",  # no image 2
    ],
)
def test_judge_template_missing_a_part_is_rejected(tmp_path: Path, user: str) -> None:
    _write(tmp_path, "pigreward-v1", "judge", f"### system\nS\n### user\n{user}\n")
    with pytest.raises(TemplateError):
        load_template("pigreward-v1", "judge", tmp_path)


@pytest.mark.parametrize(
    "user",
    [
        "{prompt} {rationales} <image_1> <image_2>",  # prompt before the user's context
        "{rationales} <image_1> {prompt} <image_2>",  # image before the prompt
        "{rationales} {prompt} <image_2> <image_1>",  # images swapped
        "<image_1> {rationales} {prompt} <image_1> <image_2>",  # an image before the context
        "<image_2> {rationales} {prompt} <image_1> <image_2>",
        "{prompt} {rationales} {prompt} <image_1> <image_2>",  # prompt also before the context
    ],
)
def test_judge_template_that_breaks_the_shared_prefix_is_rejected(tmp_path: Path, user: str) -> None:
    _write(tmp_path, "pigreward-v1", "judge", f"### user\n{user}\n")
    with pytest.raises(TemplateError, match="prefix"):
        load_template("pigreward-v1", "judge", tmp_path)


def test_judge_template_with_prompt_in_system_is_rejected(tmp_path: Path) -> None:
    _write(
        tmp_path, "json-v1", "judge", "### system\nJudge for {prompt}.\n" + JUDGE_OK.split("Be a judge.\n")[1]
    )
    with pytest.raises(TemplateError):
        load_template("json-v1", "judge", tmp_path)


def test_valid_custom_judge_template_loads(tmp_path: Path) -> None:
    _write(tmp_path, "json-v1", "judge", JUDGE_OK)
    template = load_template("json-v1", "judge", tmp_path)
    assert template.system == "Be a judge."
    assert template.user.startswith("Context:\n{rationales}") and template.user.endswith("B: <image_2>")


@pytest.mark.parametrize("token", ["{prompt}", "<chosen>", "<rejected>"])
def test_reasoner_template_needs_prompt_and_both_images(tmp_path: Path, token: str) -> None:
    _write(tmp_path, "json-v1", "reasoner", REASONER_OK.replace(token, "X"))
    with pytest.raises(TemplateError, match=re.escape(token)):
        load_template("json-v1", "reasoner", tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{rationales} {prompt} <image_1> <image_2>",  # no section header at all
        "### system\n{rationales} {prompt} <image_1> <image_2>",  # only a system section
        "## user\n{rationales} {prompt} <image_1> <image_2>",
    ],
)
def test_template_without_user_section_is_rejected(tmp_path: Path, text: str) -> None:
    _write(tmp_path, "pigreward-v1", "judge", text)
    with pytest.raises(TemplateError, match="user"):
        load_template("pigreward-v1", "judge", tmp_path)


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


# -- lookup, overrides and digests ----------------------------------------------------------------------


def test_user_dir_overrides_builtin_and_falls_back_per_file(tmp_path: Path) -> None:
    _write(tmp_path, "pigreward-v1", "judge", JUDGE_OK)
    custom = load_template("pigreward-v1", "judge", tmp_path)
    assert custom.system == "Be a judge."
    assert custom.digest != load_template("pigreward-v1", "judge").digest
    # no reasoner.txt in the user's dir, and no json-v1 dir at all: the built-in ones are used
    assert load_template("pigreward-v1", "reasoner", tmp_path) == load_template("pigreward-v1", "reasoner")
    assert load_template("json-v1", "judge", tmp_path) == load_template("json-v1", "judge")


def test_nonexistent_user_dir_falls_back_to_builtin(tmp_path: Path) -> None:
    assert load_template("json-v1", "judge", tmp_path / "missing") == load_template("json-v1", "judge")


def test_unknown_protocol_or_kind_raises_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError):
        load_template("no-such-protocol", "judge")
    with pytest.raises(TemplateError):
        load_template("pigreward-v1", "critic", tmp_path)


def test_invalid_override_is_not_silently_replaced_by_builtin(tmp_path: Path) -> None:
    _write(tmp_path, "pigreward-v1", "judge", "### user\n{prompt} {rationales} <image_1> <image_2>")
    with pytest.raises(TemplateError):
        load_template("pigreward-v1", "judge", tmp_path)


def test_digest_follows_file_content(tmp_path: Path) -> None:
    _write(tmp_path, "json-v1", "judge", JUDGE_OK)
    first = load_template("json-v1", "judge", tmp_path).digest
    assert load_template("json-v1", "judge", tmp_path).digest == first  # stable
    _write(tmp_path, "json-v1", "judge", JUDGE_OK.replace("Be a judge.", "Be a fair judge."))
    second = load_template("json-v1", "judge", tmp_path).digest
    assert second != first
    _write(tmp_path, "json-v1", "judge", JUDGE_OK + "\n")  # even whitespace is an edit
    assert load_template("json-v1", "judge", tmp_path).digest not in (first, second)
    _write(tmp_path, "json-v1", "judge", JUDGE_OK)
    assert load_template("json-v1", "judge", tmp_path).digest == first  # content, not mtime


def test_copy_of_builtin_has_builtin_digest(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "pigreward-v1" / "judge.txt").read_text(encoding="utf-8")
    _write(tmp_path, "pigreward-v1", "judge", text)
    assert (
        load_template("pigreward-v1", "judge", tmp_path).digest
        == load_template("pigreward-v1", "judge").digest
    )


def test_images_first_judge_template_is_accepted_and_reported(
    tmp_path: Path, images: dict[str, NormalizedImage]
) -> None:
    """A plausible training layout: the prefix cache then covers the images, not the user's context."""
    _write(
        tmp_path,
        "pigreward-v1",
        "judge",
        "### rationale\n[{n}] {rationale}\n### user\nImage 1: <image_1>\nImage 2: <image_2>\n"
        "This user's taste:\n{rationales}\nPrompt: {prompt}\n",
    )
    template = load_template("pigreward-v1", "judge", tmp_path)
    assert template.layout == "images-first"
    assert load_template("pigreward-v1", "judge").layout == "context-first"
    assert template.format_rationales(["likes red ", "likes calm"]) == "[1] likes red\n[2] likes calm"
    [user] = template.render(
        {"rationales": template.format_rationales(["likes red"]), "prompt": "a barn"},
        {"image_1": images["image_1"], "image_2": images["image_2"]},
    )
    kinds = [type(p).__name__ for p in user.parts]
    assert kinds == ["TextPart", "ImagePart", "TextPart", "ImagePart", "TextPart"]
    assert "[1] likes red" in user.parts[-1].text  # type: ignore[union-attr]


@pytest.mark.parametrize("line", ["{n}. no rationale here", "{rationale}\n{rationale}"])
def test_rationale_section_must_be_one_line_with_the_rationale(tmp_path: Path, line: str) -> None:
    _write(
        tmp_path,
        "pigreward-v1",
        "judge",
        f"### rationale\n{line}\n### user\n{{rationales}} {{prompt}} <image_1> <image_2>\n",
    )
    with pytest.raises(TemplateError, match="rationale"):
        load_template("pigreward-v1", "judge", tmp_path)
