"""Every kind of bad input ends as a recorded error with a clear reason, and the rest goes on."""

from __future__ import annotations

import os

import pytest

from models.db import session_scope
from models.tenants import ensure_tenant
from models.users import ensure_user
from pigreward.progress import wait_for_judgments
from tasks import judge
from tasks.runtime import get_db
from tests.integration.conftest import png_bytes
from tests.integration.helpers import image, judgment_rows, user_who_likes_warm
from tests.support.images import corrupt_png, png_bomb
from workers.drawing import DrawParams, draw_image

# case -> (expected status, expected error code, words the message must contain)
EXPECTED = {
    "missing_s3_key": ("rejected", "image_not_found", "s3://pigreward-test/does/not/exist.png"),
    "corrupt_bytes": ("rejected", "image_unreadable", "corrupt"),
    "truncated_png": ("rejected", "image_unreadable", ""),
    "non_image_file": ("rejected", "image_unreadable", "not an image"),
    "pixel_bomb": ("rejected", "image_too_large", "900000000 pixels"),
    "pixel_limit": ("rejected", "image_too_large", "over the limit of 40000000"),
    "dotdot_escape": ("rejected", "forbidden_location", "outside the image root"),
    "absolute_outside_root": ("rejected", "forbidden_location", "outside the image root"),
    "symlink_escape": ("rejected", "forbidden_location", "outside the image root"),
    "unknown_user": ("rejected", "unknown_user", "nobody-knows-me"),
    "no_references": ("rejected", "no_references", "no reference pairs"),
    "empty_prompt": ("rejected", "invalid_request", "prompt is empty"),
    "same_image": ("rejected", "invalid_request", "same image"),
    "good": ("done", None, ""),
}


@pytest.fixture(scope="module")
def outcomes(stack):  # type: ignore[no-untyped-def]
    """Submit every bad case and one good judgment together, wait, return the rows by case."""
    user_who_likes_warm(stack, "bad-input-user")
    with session_scope(get_db()) as session:
        tenant = ensure_tenant(session=session, name="default")
        ensure_user(session=session, tenant_id=tenant.id, external_id="no-refs-user")  # type: ignore[arg-type]
    good_a = image(stack, "bad/good-a.png", warmth=0.9, seed=61)
    good_b = image(stack, "bad/good-b.png", warmth=0.2, seed=62)
    full_png = png_bytes(
        draw_image(
            DrawParams(
                warmth=0.5, saturation=0.5, brightness=0.5, clutter=0.5, centering=0.5, symmetry=0.5, seed=3
            ),
            size=128,
        )
    )
    (stack.image_root / "inside.png").write_bytes(full_png)
    os.symlink("/etc", stack.image_root / "escape")
    user = "bad-input-user"
    cases = {
        "missing_s3_key": (user, "p", "s3://pigreward-test/does/not/exist.png", good_b),
        "corrupt_bytes": (user, "p", stack.put("bad/corrupt.png", corrupt_png()), good_b),
        "truncated_png": (user, "p", stack.put("bad/truncated.png", full_png[: len(full_png) // 2]), good_b),
        "non_image_file": (
            user,
            "p",
            stack.put("bad/notes.txt", b"hello, this is not an image\n" * 20),
            good_b,
        ),
        "pixel_bomb": (user, "p", stack.put("bad/bomb.png", png_bomb()), good_b),
        "pixel_limit": (user, "p", stack.put("bad/big.png", png_bomb(8000, 6000)), good_b),
        "dotdot_escape": (user, "p", "file://../../../../etc/hostname", good_b),
        "absolute_outside_root": (user, "p", "file:///etc/hostname", good_b),
        "symlink_escape": (user, "p", "file://escape/hostname", good_b),
        "unknown_user": ("nobody-knows-me", "p", good_a, good_b),
        "no_references": ("no-refs-user", "p", good_a, good_b),
        "empty_prompt": (user, "   ", good_a, good_b),
        "same_image": (user, "p", good_a, stack.put("bad/good-a-copy.png", png_bytes_of(stack, good_a))),
        "good": (user, "a sunny beach", good_a, "file://inside.png"),
    }
    results = {case: judge.delay(*args) for case, args in cases.items()}
    ids = {case: r.get(timeout=120)["judgment_id"] for case, r in results.items()}
    wait_for_judgments(get_db(), list(ids.values()), progress=False, timeout_s=120)
    rows = {r.id: r for r in judgment_rows()}
    return {case: rows[jid] for case, jid in ids.items()}


def png_bytes_of(stack, uri: str) -> bytes:  # type: ignore[no-untyped-def]
    key = uri.split("/", 3)[3]
    return stack.s3().get_object(Bucket="pigreward-test", Key=key)["Body"].read()


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_input_is_recorded_with_a_clear_reason(outcomes, case: str) -> None:  # type: ignore[no-untyped-def]
    status, code, words = EXPECTED[case]
    row = outcomes[case]
    assert row.status == status, (row.status, row.error_code, row.error)
    assert row.error_code == code
    if code:
        assert words in row.error, row.error
        assert row.finished_at is not None
        assert row.winner is None


def test_bad_inputs_did_not_stop_the_worker(outcomes) -> None:  # type: ignore[no-untyped-def]
    assert outcomes["good"].status == "done"
    assert outcomes["good"].winner in ("A", "B")
