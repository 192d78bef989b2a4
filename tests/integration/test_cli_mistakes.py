"""Careless-user mistakes at the command line (issue 12, defect 8): each is one clear line naming what
to fix, exit code 2 for configuration and usage mistakes, and nothing half-recorded."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from ops.stack import REPO


def cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    clean["PIGREWARD_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "pigreward.cli", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    text = proc.stderr.strip()
    for word in words:
        assert word in text, (word, text)
    return text


def test_refs_add_refuses_a_missing_or_unreadable_image_by_name(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png", (200, 50, 50))
    (tmp_path / "notes.txt").write_text("not an image")
    missing = cli(
        tmp_path / "d", "refs", "add", "--user", "u", "--prompt", "p", str(tmp_path / "nope.png"), str(good)
    )
    _one_line_error(missing, "nope.png", "no such file")
    unreadable = cli(
        tmp_path / "d", "refs", "add", "--user", "u", "--prompt", "p", str(good), str(tmp_path / "notes.txt")
    )
    _one_line_error(unreadable, "REJECTED", "not an image")
    listing = cli(tmp_path / "d", "refs", "list", "--user", "u")
    assert "0 reference pairs" in listing.stderr or listing.returncode == 1, listing  # nothing was added


def test_refs_remove_takes_one_pair_back(tmp_path: Path) -> None:
    data = tmp_path / "d"
    pngs = [_png(tmp_path / f"{i}.png", (40 * i, 100, 200 - 40 * i)) for i in range(4)]
    for a, b in ((pngs[0], pngs[1]), (pngs[2], pngs[3])):
        added = cli(data, "refs", "add", "--user", "u", "--prompt", "a scene", str(a), str(b))
        assert added.returncode == 0, added.stderr
    listing = cli(data, "refs", "list", "--user", "u")
    ids = [line.split("\t")[0] for line in listing.stdout.splitlines()]
    assert len(ids) == 2, listing
    removed = cli(data, "refs", "remove", "--user", "u", ids[0])
    assert removed.returncode == 0 and "1 left" in removed.stdout, removed
    after = cli(data, "refs", "list", "--user", "u")
    assert [line.split("\t")[0] for line in after.stdout.splitlines()] == ids[1:]
    again = cli(data, "refs", "remove", "--user", "u", ids[0])
    assert again.returncode == 1 and f"no reference pair {ids[0]}" in again.stderr


def test_a_missing_local_file_is_named_as_missing(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png", (10, 200, 10))
    proc = cli(tmp_path / "d", "judge", "--user", "u", "--prompt", "p", str(tmp_path / "gone.png"), str(good))
    text = _one_line_error(proc, "gone.png", "no such file")
    assert "outside the image root" not in text


def test_the_data_dir_does_not_follow_the_current_directory(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    code = "from core.settings import Settings; s = Settings(); print(s.resolved_database_url, s.resolved_image_root)"
    seen = set()
    for cwd in (tmp_path, REPO):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            env={**clean, **env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        seen.add(out)
    assert len(seen) == 1 and str(tmp_path / "xdg" / "pigreward") in seen.pop()


def test_configuration_mistakes_are_one_line_naming_the_setting(tmp_path: Path) -> None:
    wrong_pg = cli(
        tmp_path, "keys", "list", env={"PIGREWARD_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    )
    _one_line_error(wrong_pg, "PIGREWARD_DATABASE_URL", "cannot connect")
    assert len(wrong_pg.stderr.strip().splitlines()) == 1, wrong_pg.stderr
    bad_url = cli(tmp_path, "keys", "list", env={"PIGREWARD_DATABASE_URL": "postgres-ish://x"})
    _one_line_error(bad_url, "PIGREWARD_DATABASE_URL")
    bad_number = cli(tmp_path, "keys", "list", env={"PIGREWARD_MAX_IMAGE_BYTES": "lots"})
    _one_line_error(bad_number, "PIGREWARD_MAX_IMAGE_BYTES")
    bad_request = cli(
        tmp_path / "d", "judge", "--user", "a b", "--prompt", "p", "s3://bucket/a.png", "s3://bucket/b.png"
    )
    _one_line_error(bad_request, "user")
