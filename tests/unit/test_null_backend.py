"""The `null` benchmark backend: constant, valid, and consistent with the real output format."""

from __future__ import annotations

import pytest
from PIL import Image

from core.errors import NoReferences
from workers.backends import BACKENDS, create_backend
from workers.imaging import NormalizedImage
from workers.position import judge_pair
from workers.protocols.pigreward_v1_parser import parse
from workers.schemas import ReferenceExample


def _image(sha: str) -> NormalizedImage:
    return NormalizedImage(
        sha256=sha,
        uri=f"{sha}.png",
        width=4,
        height=4,
        format="PNG",
        size_bytes=1,
        image=Image.new("RGB", (4, 4)),
    )


def test_null_backend_is_created_by_name_but_not_offered_to_users() -> None:
    backend = create_backend("null")
    assert backend.name == "null"
    assert "null" not in BACKENDS


def test_null_backend_verdict_is_what_its_raw_text_says() -> None:
    backend = create_backend("null")
    context = backend.build_context([ReferenceExample("a cat", _image("a"), _image("b"))])
    assert len(context.rationales) == 1
    result = backend.judge(context, "a dog", _image("c"), _image("d"))
    parsed = parse(result.raw_text)
    assert result.outcome == parsed.outcome == "valid"
    assert (result.total_a, result.total_b) == (parsed.total_1, parsed.total_2)
    assert [(d.name, d.score_a, d.score_b) for d in result.dimensions] == [
        (d.name, d.score_1, d.score_2) for d in parsed.dimensions
    ]
    assert parsed.winner == "1" and result.winner == "A"  # image 1 is image A in this order
    verdict = judge_pair(backend, context, "a dog", _image("c"), _image("d"), swap=False)
    assert verdict.outcome == "valid" and verdict.winner == "A"


def test_null_backend_refuses_an_empty_context() -> None:
    with pytest.raises(NoReferences):
        create_backend("null").build_context([])
