"""Versioned, editable prompt templates: plain text files, one per (protocol, kind).

A template file has a `### system` and a `### user` section, and a judge template may have a
`### rationale` section: the line each rationale of the user's context becomes (`{n}` its number,
`{rationale}` its text; default `{n}. {rationale}`). `{name}` placeholders are filled with text;
`<image_1>`-style markers become image parts.

Layout and the prefix cache: when the user's context (`{rationales}`) comes before the prompt and the
images ("context-first", the built-in layout), every request of one user shares a byte-identical
prefix that SGLang's RadixAttention reuses. A judge template may instead put the images before the
context ("images-first", a plausible training layout): then a user's requests share only the
instructions, and the cache covers a pair's images across its retries instead; the layout is reported
by `Template.layout`. The version recorded with every result is the protocol name plus a hash of the
files, so any edit is visible in the ledger.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.generation import ChatMessage, ImagePart, TextPart
from workers.imaging import NormalizedImage

BUILTIN_DIR = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_IMAGE = re.compile(r"<(image_1|image_2|chosen|rejected)>")
_SECTION = re.compile(r"^### (system|user|rationale)\s*$", re.MULTILINE)
DEFAULT_RATIONALE_LINE = "{n}. {rationale}"


class TemplateError(ValueError):
    """A template file is missing, malformed, or orders its parts so that prefixes cannot be shared."""


@dataclass(frozen=True)
class Template:
    protocol: str
    kind: str  # judge | reasoner
    system: str
    user: str
    digest: str
    rationale_line: str = DEFAULT_RATIONALE_LINE
    layout: str = "context-first"  # judge templates: context-first | images-first

    def format_rationales(self, rationales: Sequence[str]) -> str:
        """The context block: one line per rationale, numbered as the template says."""
        return "\n".join(
            self.rationale_line.replace("{n}", str(i)).replace("{rationale}", r.strip())
            for i, r in enumerate(rationales, 1)
        )

    def render(self, values: dict[str, str], images: dict[str, NormalizedImage]) -> tuple[ChatMessage, ...]:
        def fill(text: str) -> str:
            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in values:
                    raise TemplateError(f"{self.protocol}/{self.kind}: no value for {{{m.group(1)}}}")
                return values[m.group(1)]

            return _PLACEHOLDER.sub(sub, text)

        # markers are found in the template before filling, so values that happen to contain
        # "<image_1>" (a rationale, a prompt) stay text
        parts: list[TextPart | ImagePart] = []
        pos = 0
        for m in _IMAGE.finditer(self.user):
            if m.start() > pos:
                parts.append(TextPart(fill(self.user[pos : m.start()])))
            if m.group(1) not in images:
                raise TemplateError(f"{self.protocol}/{self.kind}: no image for <{m.group(1)}>")
            parts.append(ImagePart(images[m.group(1)]))
            pos = m.end()
        if pos < len(self.user):
            parts.append(TextPart(fill(self.user[pos:])))
        messages = []
        if self.system:
            messages.append(ChatMessage("system", (TextPart(fill(self.system)),)))
        messages.append(ChatMessage("user", tuple(parts)))
        return tuple(messages)


def load_template(protocol: str, kind: str, template_dir: Path | None = None) -> Template:
    """Read `<dir>/<protocol>/<kind>.txt` (the user's dir first, then the built-in one)."""
    for base in ([template_dir] if template_dir else []) + [BUILTIN_DIR]:
        path = base / protocol / f"{kind}.txt"
        if path.is_file():
            return _parse(protocol, kind, path.read_text(encoding="utf-8"), path)
    raise TemplateError(
        f"no template {protocol}/{kind}.txt in {template_dir or ''} or the built-in templates"
    )


def _parse(protocol: str, kind: str, text: str, path: Path) -> Template:
    sections: dict[str, str] = {}
    marks = list(_SECTION.finditer(text))
    if not marks or "user" not in {m.group(1) for m in marks}:
        raise TemplateError(f"{path}: needs a '### user' section (and optionally '### system')")
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        sections[m.group(1)] = text[m.end() : end].strip("\n")
    user = sections["user"]
    layout = "context-first"
    if kind == "judge":
        order = [user.find(token) for token in ("{rationales}", "{prompt}", "<image_1>", "<image_2>")]
        if -1 in order:
            raise TemplateError(
                f"{path}: a judge template needs {{rationales}}, {{prompt}}, <image_1>, <image_2>"
            )
        rationales_at, prompt_at, image_1_at, image_2_at = order
        if "{prompt}" in sections.get("system", "") or "{rationales}" in sections.get("system", ""):
            raise TemplateError(f"{path}: {{prompt}} and {{rationales}} belong in the user section")
        once = all(user.count(t) == 1 for t in ("<image_1>", "<image_2>", "{rationales}"))
        if once and rationales_at < prompt_at < image_1_at < image_2_at:
            layout = "context-first"
        elif once and image_1_at < image_2_at < rationales_at:
            layout = "images-first"
        else:
            raise TemplateError(
                f"{path}: lay the judge template out context-first ({{rationales}}, {{prompt}}, <image_1>, "
                "<image_2>: all requests of one user share a prefix) or images-first (<image_1>, <image_2> "
                "before {rationales}), each image and the context once"
            )
        line = sections.get("rationale", DEFAULT_RATIONALE_LINE).strip()
        if "{rationale}" not in line or "\n" in line:
            raise TemplateError(f"{path}: the '### rationale' section is one line holding {{rationale}}")
        sections["rationale"] = line
    elif kind == "reasoner":
        for token in ("{prompt}", "<chosen>", "<rejected>"):
            if token not in user:
                raise TemplateError(f"{path}: a reasoner template needs {token}")
    elif "rationale" in sections:
        raise TemplateError(f"{path}: only a judge template has a '### rationale' section")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return Template(
        protocol,
        kind,
        sections.get("system", ""),
        user,
        digest,
        rationale_line=sections.get("rationale", DEFAULT_RATIONALE_LINE),
        layout=layout,
    )
