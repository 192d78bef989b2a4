"""Versioned, editable prompt templates: plain text files, one per (protocol, kind).

A template file has a `### system` and a `### user` section. `{name}` placeholders are filled with
text; `<image_1>`-style markers become image parts. The judge template must put the user's context
(`{rationales}`) before the target prompt and the images, so every request of one user shares a
byte-identical prefix (SGLang's RadixAttention reuses its KV cache). The version recorded with every
result is the protocol name plus a hash of the files, so any edit is visible in the ledger.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from workers.generation import ChatMessage, ImagePart, TextPart
from workers.imaging import NormalizedImage

BUILTIN_DIR = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_IMAGE = re.compile(r"<(image_1|image_2|chosen|rejected)>")
_SECTION = re.compile(r"^### (system|user)\s*$", re.MULTILINE)


class TemplateError(ValueError):
    """A template file is missing, malformed, or orders its parts so that prefixes cannot be shared."""


@dataclass(frozen=True)
class Template:
    protocol: str
    kind: str  # judge | reasoner
    system: str
    user: str
    digest: str

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
    if kind == "judge":
        order = [user.find(token) for token in ("{rationales}", "{prompt}", "<image_1>", "<image_2>")]
        if -1 in order:
            raise TemplateError(
                f"{path}: a judge template needs {{rationales}}, {{prompt}}, <image_1>, <image_2>"
            )
        if order != sorted(order) or "<image" in user[: order[0]] or "{prompt}" in sections.get("system", ""):
            raise TemplateError(
                f"{path}: the user's context ({{rationales}}) must come before the prompt and the images, "
                "so that all requests of one user share a prefix"
            )
    elif kind == "reasoner":
        for token in ("{prompt}", "<chosen>", "<rejected>"):
            if token not in user:
                raise TemplateError(f"{path}: a reasoner template needs {token}")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return Template(protocol, kind, sections.get("system", ""), user, digest)
