"""The result viewer, rendered by headless Chromium against a real API server process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from models.db import session_scope
from models.keys import create_key
from models.tenants import grant_prefix
from ops.stack import api_server
from tasks import judge
from tasks.runtime import get_db
from tests.integration.helpers import image, user_who_likes_warm

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=8000",
]


@pytest.fixture(scope="module")
def server(stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    with api_server(stack.env, tmp_path_factory.mktemp("api") / "api.log") as url:
        yield url


@pytest.fixture(scope="module")
def judged(stack):  # type: ignore[no-untyped-def]
    """A done judgment of tenant `viewer`, and that tenant's key."""
    user_who_likes_warm(stack, "viewer-user", tenant="viewer")
    a = image(stack, "viewer/warm.png", warmth=0.9, seed=701)
    b = image(stack, "viewer/cool.png", warmth=0.1, seed=702)
    result = judge.delay("viewer-user", "a lighthouse at dusk", a, b, None, "viewer").get(timeout=120)
    assert result["status"] == "done"
    with session_scope(get_db()) as session:
        _, key = create_key(session=session, tenant="viewer", name="viewer-test")
        grant_prefix(session=session, name="viewer", prefix="s3://pigreward-test/viewer/")
    return result["judgment_id"], key


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Debian's chromium is needed for the viewer test (ops/test.sh installs it)"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_judgment_page_shows_both_images_and_the_dimension_table(server, judged, tmp_path) -> None:  # type: ignore[no-untyped-def]
    judgment_id, key = judged
    url = f"{server}/ui/login?key={key}&next=/ui/judgments/{judgment_id}"
    dom = chromium("--dump-dom", url, profile=tmp_path / "p1").stdout
    assert f"Judgment {judgment_id}" in dom
    loaded = re.findall(
        r'alt="Image ([AB])"[^>]*data-loaded="(\d+)"|data-loaded="(\d+)"[^>]*alt="Image ([AB])"', dom
    )
    widths = {m[0] or m[3]: int(m[1] or m[2]) for m in loaded}
    assert set(widths) == {"A", "B"} and min(widths.values()) > 0, dom[:2000]  # both images decoded
    table = dom[dom.index('id="dimensions"') :]
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td class=\"num\">([\d.\-]+)</td><td class=\"num\">([\d.\-]+)</td>", table
    )
    assert len(rows) >= 3 and any("Warm" in name for name, _, _ in rows)
    assert "winner: A" in table
    # the page says which image the model saw as "Image 1" (the name its reasons use)
    assert "shown to the model as Image 1" in dom and "shown to the model as Image 2" in dom
    assert 'where Image A was "Image 1"' in dom and "none (no model)" in dom  # lite: no decoding
    # how sure the verdict is, and that no calibration of this model version exists yet
    assert re.search(r"Confidence: <strong>\d+%</strong> that this user prefers Image A \(uncalibrated", dom)
    shot = tmp_path / "judgment.png"
    chromium("--window-size=1200,1500", f"--screenshot={shot}", url, profile=tmp_path / "p2")
    assert shot.is_file() and shot.stat().st_size > 20_000
    artifacts = os.environ.get("PIGREWARD_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "judgment.png")


def test_viewer_pages_need_a_key_and_respect_tenants(server, judged) -> None:  # type: ignore[no-untyped-def]
    judgment_id, key = judged
    anonymous = httpx.get(f"{server}/ui/judgments/{judgment_id}", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ui/login")
    with session_scope(get_db()) as session:
        _, other = create_key(session=session, tenant="someone-else", name="x")
    foreign = httpx.get(f"{server}/ui/judgments/{judgment_id}", cookies={"pigreward_key": other})
    assert foreign.status_code == 404
    own = httpx.get(f"{server}/ui/users/viewer-user", cookies={"pigreward_key": key})
    assert own.status_code == 200 and "Reference pairs (6)" in own.text and 'id="rationales"' in own.text
    # the context's leave-one-out check (on for lite): six held-out choices
    assert re.search(r"leave-one-out accuracy <strong>\d+%</strong> \(\d of 6 held-out choices", own.text), (
        own.text
    )
    picture = httpx.get(f"{server}/ui/images/{judgment_id}/a", cookies={"pigreward_key": key})
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad = httpx.post(f"{server}/ui/login", data={"key": "pgr_nope_nope", "next": "/ui/users/x"})
    assert bad.status_code == 401 and "invalid API key" in bad.text
