"""The `pigreward` command on the embedded default (SQLite, local images, in-process worker)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ops.stack import REPO, free_port, wait_until
from tests.integration.conftest import png_bytes


def run_cli(
    data_dir: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    clean["PIGREWARD_DATA_DIR"] = str(data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "pigreward.cli", *args],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        input=stdin,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("demo")
    proc = run_cli(data_dir, "demo", "--no-progress")
    return data_dir, proc.stdout


def _overall(stdout: str) -> list[float]:
    line = next(line for line in stdout.splitlines() if line.startswith("overall"))
    return [float(x) for x in re.findall(r"([\d.]+)%", line)]


def test_demo_prints_all_methods_and_lite_beats_the_non_personalized_baseline(demo_run) -> None:  # type: ignore[no-untyped-def]
    _, stdout = demo_run
    header = stdout.splitlines()[0]
    for method in ("lite", "random", "non-personalized"):
        assert method in header
    lite, random_, global_ = _overall(stdout)
    assert lite - global_ >= 10.0, stdout
    assert 0 <= random_ <= 100
    assert "judgments: done 200" in stdout
    assert "pigreward.db" in stdout


def test_judge_command_prints_the_dimension_table(demo_run) -> None:  # type: ignore[no-untyped-def]
    data_dir, _ = demo_run
    images = data_dir / "images" / "demo" / "images"
    proc = run_cli(
        data_dir,
        "judge",
        "--user",
        "user_00",
        "--prompt",
        "a lighthouse",
        str(images / "img_0001.png"),
        str(images / "img_0002.png"),
    )
    assert "dimension" in proc.stdout and "total" in proc.stdout
    assert re.search(r"winner: (A|B|tie)", proc.stdout)
    assert "lite-bradley-terry" in proc.stdout


def test_judge_command_copies_outside_files_in_and_reports_bad_input(demo_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data_dir, _ = demo_run
    images = data_dir / "images" / "demo" / "images"
    outside = tmp_path / "mine.png"
    outside.write_bytes((images / "img_0003.png").read_bytes())
    ok = run_cli(
        data_dir, "judge", "--user", "user_01", "--prompt", "x", str(outside), str(images / "img_0004.png")
    )
    assert "status done" in ok.stdout
    assert list((data_dir / "images" / "uploads").glob("*.png"))

    missing = run_cli(
        data_dir, "judge", "--user", "user_01", "--prompt", "x", "file://nope.png", str(outside), check=False
    )
    assert missing.returncode == 1
    assert "status rejected" in missing.stdout and "[image_not_found]" in missing.stdout

    unknown = run_cli(
        data_dir,
        "judge",
        "--user",
        "ghost",
        "--prompt",
        "x",
        str(outside),
        str(images / "img_0004.png"),
        check=False,
    )
    assert unknown.returncode == 1 and "[unknown_user]" in unknown.stdout


def test_refs_add_then_judge_for_a_new_user(tmp_path: Path) -> None:
    from workers.drawing import DrawParams, draw_image

    def draw(name: str, warmth: float, seed: int) -> str:
        path = tmp_path / name
        draw_image(
            DrawParams(
                warmth=warmth,
                saturation=0.7,
                brightness=0.5,
                clutter=0.3,
                centering=0.5,
                symmetry=0.5,
                seed=seed,
            ),
            size=96,
        ).save(path)
        return str(path)

    data_dir = tmp_path / "data"
    for i in range(4):
        out = run_cli(
            data_dir,
            "refs",
            "add",
            "--user",
            "cool-fan",
            "--prompt",
            f"p{i}",
            draw(f"c{i}.png", 0.1, i),
            draw(f"w{i}.png", 0.9, 10 + i),
        )
        assert "reference" in out.stdout
    proc = run_cli(
        data_dir,
        "judge",
        "--user",
        "cool-fan",
        "--prompt",
        "new",
        draw("new-w.png", 0.95, 50),
        draw("new-c.png", 0.05, 51),
    )
    assert "winner: B" in proc.stdout  # the cooler image, as every reference chose


def test_db_upgrade_and_worker_refusal_on_the_embedded_broker(tmp_path: Path) -> None:
    up = run_cli(tmp_path, "db", "upgrade")
    assert "database at revision 0007" in up.stdout
    worker = run_cli(tmp_path, "worker", check=False)
    assert worker.returncode != 0
    assert "memory://" in worker.stderr and "PIGREWARD_BROKER_URL" in worker.stderr


def test_synth_writes_a_set_and_refuses_impossible_settings(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "synth", str(tmp_path / "set"), "--users", "4", "--images", "40", "--no-progress")
    assert "40 images, 4 users" in out.stdout
    from pigreward import synthetic

    data = synthetic.load(tmp_path / "set")
    assert len(data.users) == 4 and len(list((tmp_path / "set" / "images").glob("*.png"))) == 40
    bad = run_cli(tmp_path, "synth", str(tmp_path / "bad"), "--min-refs", "9", "--max-refs", "3", check=False)
    assert bad.returncode == 2 and "Invalid value" in bad.stderr


CORPUS = REPO / "tests" / "data" / "pigreward_v1"


def test_parse_command_prints_the_parse_as_json(tmp_path: Path) -> None:
    import json

    valid = sorted((CORPUS / "valid").glob("*.txt"))[0]
    out = run_cli(tmp_path, "parse", "--protocol", "pigreward-v1", str(valid))
    parsed, expected = json.loads(out.stdout), json.loads(valid.with_suffix(".json").read_text())
    assert parsed["outcome"] == "valid" and parsed["reason"] is None
    assert parsed["winner"] == expected["winner"]
    assert [d["score_1"] for d in parsed["dimensions"]] == [d["score_1"] for d in expected["dimensions"]]
    loop = next((CORPUS / "invalid").glob("repetition__*.txt"))
    bad = run_cli(tmp_path, "parse", "-", stdin=loop.read_text(), check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["reason"] == "repetition"
    cut = run_cli(tmp_path, "parse", "--finish-reason", "length", str(valid), check=False)
    assert json.loads(cut.stdout)["reason"] == "truncated" and json.loads(cut.stdout)["winner"] is None
    as_json = run_cli(
        tmp_path,
        "parse",
        "--protocol",
        "json-v1",
        "-",
        stdin='{"dimensions": [{"name": "Warmth", "reason": "r", "score_1": 2, "score_2": 4}], "summary": ""}',
    )
    assert json.loads(as_json.stdout)["winner"] == "2"


@pytest.mark.slow  # a demo on a tiny VLM on the CPU
def test_demo_and_judge_with_the_hf_backend_on_a_tiny_model(tmp_path: Path) -> None:
    from tests.support.tiny_vlm import build_tiny_vlm

    model = str(build_tiny_vlm(tmp_path / "tiny", "qwen2_vl"))
    env = {
        "PIGREWARD_HF_JUDGE_MODEL": model,
        "PIGREWARD_HF_REASONER_MODEL": model,
        "HF_HUB_OFFLINE": "1",
        # random weights write until the token limit: small limits keep this a test of the plumbing
        "PIGREWARD_REASONER_MAX_TOKENS": "24",
        "PIGREWARD_JUDGE_MAX_TOKENS": "48",
    }
    data = tmp_path / "data"
    out = run_cli(
        data,
        "demo",
        "--backend",
        "hf",
        "--users",
        "2",
        "--images",
        "16",
        "--tests-per-user",
        "2",
        "--no-progress",
        env=env,
    )
    assert out.stdout.splitlines()[0].split()[3] == "hf"
    assert re.search(r"judgments: (done|invalid) \d+", out.stdout)
    images = data / "images" / "demo" / "images"
    one = run_cli(
        data,
        "judge",
        "--backend",
        "hf",
        "--protocol",
        "json-v1",
        "--user",
        "user_00",
        "--prompt",
        "x",
        str(images / "img_0001.png"),
        str(images / "img_0002.png"),
        env=env,
        check=False,
    )
    assert "json-v1@" in one.stdout or "invalid output" in one.stdout, one.stdout + one.stderr


def test_judge_command_with_the_sglang_backend(demo_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.fake_openai import fake_openai_server

    data_dir, _ = demo_run
    images = data_dir / "images" / "demo" / "images"
    with fake_openai_server() as (url, state):
        out = run_cli(
            data_dir,
            "judge",
            "--backend",
            "sglang",
            "--user",
            "user_02",
            "--prompt",
            "p",
            str(images / "img_0005.png"),
            str(images / "img_0006.png"),
            env={"PIGREWARD_SGLANG_URL": url},
        )
    assert "status done" in out.stdout and "stub-judge" in out.stdout
    assert "Warm palette" in out.stdout
    assert state.calls["p"] == 2  # both orders


WITHOUT_LVLM_EXTRA = (
    "import sys; sys.modules.update(torch=None, transformers=None, xgrammar=None); "
    "from pigreward.cli import main; sys.argv[0] = 'pigreward'; main()"
)


def test_the_core_install_judges_with_an_sglang_server(demo_run) -> None:  # type: ignore[no-untyped-def]
    """Worker hosts that talk to an SGLang server need no torch, transformers or xgrammar (the core
    install): token budgets are estimated, images counted without torch; the hf backend says which
    extra it needs."""
    from tests.support.fake_openai import fake_openai_server

    data_dir, _ = demo_run
    images = data_dir / "images" / "demo" / "images"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}

    def core(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", WITHOUT_LVLM_EXTRA, *args],
            cwd=REPO,
            env={**clean, "PIGREWARD_DATA_DIR": str(data_dir), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )

    pair = ["--user", "user_03", "--prompt", "p", str(images / "img_0007.png"), str(images / "img_0008.png")]
    with fake_openai_server() as (url, state):
        out = core("judge", "--backend", "sglang", *pair, PIGREWARD_SGLANG_URL=url)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "status done" in out.stdout and "stub-judge" in out.stdout
        assert state.calls["p"] == 2  # both orders
        checked = core("check", "--backend", "sglang", "--no-probe", PIGREWARD_SGLANG_URL=url)
        assert checked.returncode == 0 and "backend sglang: judge stub-judge" in checked.stdout, (
            checked.stderr
        )
    hf = core("judge", "--backend", "hf", *pair)
    assert 'pip install "pigreward[lvlm]"' in hf.stdout + hf.stderr
    assert "Traceback" not in hf.stderr


def test_check_reports_readiness_and_identity(tmp_path: Path) -> None:
    from tests.support.fake_openai import fake_openai_server

    with fake_openai_server() as (url, _):
        ok = run_cli(tmp_path, "check", "--backend", "sglang", env={"PIGREWARD_SGLANG_URL": url})
    assert "judge: " in ok.stdout and "ready" in ok.stdout and "stub-judge rev abc1234def" in ok.stdout
    down = run_cli(
        tmp_path,
        "check",
        "--backend",
        "sglang",
        check=False,
        env={"PIGREWARD_SGLANG_URL": "http://127.0.0.1:9", "PIGREWARD_SGLANG_MAX_ATTEMPTS": "1"},
    )
    assert down.returncode == 1 and "NOT READY" in down.stdout and "not usable" in down.stderr


@pytest.mark.slow  # optimizes prompts for six users
def test_bench_optimize_meets_the_70_percent_goal(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "bench", "optimize", "--users", "4", "--held-out", "40", "--no-progress")
    share = float(re.search(r"final prompt preferred: ([\d.]+)%", out.stdout).group(1))  # type: ignore[union-attr]
    assert share >= 70.0, out.stdout
    assert "held-out comparisons: 160" in out.stdout
    shown = run_cli(tmp_path, "optimize", "show", "1")
    assert "done" in shown.stdout and "file://optimize/1/r1-c0.png" in shown.stdout
    exported = run_cli(tmp_path, "optimize", "export", "1")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert rows and {"prompt", "chosen", "rejected", "user", "evidence", "confidence"} <= set(rows[0])
    cut = sorted(r["confidence"] for r in rows)[len(rows) // 2]
    confident = run_cli(tmp_path, "optimize", "export", "1", "--min-confidence", str(cut))
    kept = [json.loads(line) for line in confident.stdout.splitlines()]
    assert kept and all(r["confidence"] >= cut for r in kept)
    assert len(kept) == sum(r["confidence"] >= cut for r in rows)
    assert f"below confidence {cut:g} left out" in confident.stderr or len(kept) == len(rows)


@pytest.mark.slow  # a full accuracy run
def test_bench_convert_then_accuracy_on_the_ranked_fixture(tmp_path: Path) -> None:
    import shutil

    ranked = tmp_path / "data" / "images" / "ranked"
    shutil.copytree(REPO / "tests" / "data" / "ranked", ranked)
    out = run_cli(tmp_path / "data", "bench", "convert", str(ranked), str(ranked / "bench.jsonl"))
    assert "3 users" in out.stdout
    report = run_cli(
        tmp_path / "data",
        "bench",
        "accuracy",
        str(ranked / "bench.jsonl"),
        "-o",
        str(tmp_path / "rep"),
        "--no-progress",
    )
    assert "lite" in report.stdout and "random" in report.stdout and "non-personalized" in report.stdout
    assert (tmp_path / "rep" / "report.html").read_text().count("<svg") >= 3
    bad = run_cli(
        tmp_path / "data", "bench", "convert", str(tmp_path), str(tmp_path / "x.jsonl"), check=False
    )
    assert bad.returncode == 1 and "rankings.jsonl" in bad.stderr


def test_db_current_history_and_downgrade(tmp_path: Path) -> None:
    fresh = run_cli(tmp_path, "db", "current")
    assert "no schema yet" in fresh.stdout and "0007" in fresh.stdout
    run_cli(tmp_path, "db", "upgrade")
    assert "at revision 0007 (the newest)" in run_cli(tmp_path, "db", "current").stdout
    history = run_cli(tmp_path, "db", "history").stdout.splitlines()
    assert [line.split()[0] for line in history] == ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]
    assert history[-1].endswith("<- current") and "trust signals" in history[-1]
    down = run_cli(tmp_path, "db", "downgrade", "-1", "--yes")
    assert "database at revision 0006" in down.stdout
    behind = run_cli(tmp_path, "db", "current").stdout
    assert "at revision 0006; newest is 0007, run `pigreward db upgrade`" in behind
    refused = run_cli(tmp_path, "db", "downgrade", "base", check=False, stdin="n\n")
    assert refused.returncode != 0 and "Aborted" in refused.stderr
    assert "at revision 0006" in run_cli(tmp_path, "db", "current").stdout  # nothing was dropped


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    return png_bytes(Image.new("RGB", (64, 64), color))


def test_api_on_the_embedded_default_judges_in_process(tmp_path: Path) -> None:
    """In a fresh folder, with no settings: `pigreward api` accepts a judgment over HTTP and an
    in-process worker finishes it (the memory:// broker reaches no other process)."""
    import httpx

    run_cli(tmp_path, "db", "upgrade")
    key = run_cli(tmp_path, "keys", "create", "--tenant", "t1").stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGREWARD_")}
    env["PIGREWARD_DATA_DIR"] = str(tmp_path)
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pigreward.cli", "api", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "pigreward api")
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=20)
            assert client.post("/v1/users", json={"external_id": "alice"}).status_code == 201
            pairs = []
            for i in range(3):
                files = {
                    "chosen": ("c.png", _png((220, 40 * i, 20)), "image/png"),
                    "rejected": ("r.png", _png((20, 40 * i, 220)), "image/png"),
                }
                r = client.post("/v1/users/alice/references/upload", data={"prompt": f"p{i}"}, files=files)
                assert r.status_code == 201, r.text
                pairs.append(r.json())
            body = {
                "user": "alice",
                "prompt": "a red barn",
                "image_a": pairs[0]["chosen"],
                "image_b": pairs[0]["rejected"],
            }
            submitted = client.post("/v1/judgments", json=body)
            assert submitted.status_code == 202, submitted.text
            jid = submitted.json()["id"]
            final: dict[str, object] = {}

            def finished() -> bool:
                final.update(client.get(f"/v1/judgments/{jid}").json())
                return final["status"] not in ("queued", "running", "waiting")

            wait_until(finished, 60, "the judgment")
            assert final["status"] == "done", final
            assert final["winner"] in ("A", "B", "tie")
            assert len(final["dimensions"]) >= 3  # type: ignore[arg-type]
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
    text = log.read_text()
    assert "in-process worker" in text and "Traceback" not in text


def test_api_with_several_processes_on_the_embedded_broker_is_refused_in_one_line(tmp_path: Path) -> None:
    """uvicorn processes would each hold their own memory:// queue: the API names the settings it needs."""
    refused = run_cli(tmp_path, "api", "--port", "1", "--workers", "2", check=False)
    assert refused.returncode == 2
    assert "PIGREWARD_BROKER_URL=redis://" in refused.stderr and "pigreward worker" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_trust_commands_on_the_demo_ledger(demo_run) -> None:  # type: ignore[no-untyped-def]
    """users show (context quality), calibrate fit/list (from the demo's leave-one-out checks), and
    results filtered by confidence: calibrated once a calibration of lite's version exists."""
    data_dir, _ = demo_run
    shown = run_cli(data_dir, "users", "show", "user_00").stdout
    assert "reference pairs" in shown and "leave-one-out accuracy" in shown, shown
    assert re.search(r"\d+ of \d+ held-out choices predicted", shown), shown

    every = run_cli(data_dir, "results").stdout.splitlines()
    rows = [json.loads(line) for line in every]
    assert rows and all("confidence" in r for r in rows)
    done = [r for r in rows if r["status"] == "done" and r["winner"] in ("A", "B")]
    assert done and all(0.0 < r["confidence"] <= 1.0 and r["calibration_version"] is None for r in done)

    fitted = run_cli(data_dir, "calibrate", "fit", "--backend", "lite")
    assert "held-out pairs from 20 users" in fitted.stdout, fitted.stdout
    assert fitted.stdout.startswith("lite:lite-bradley-terry@1:")
    version = fitted.stdout.split(" ")[0].rstrip(":")
    listed = run_cli(data_dir, "calibrate", "list").stdout
    assert listed.split("\t")[0] == version

    high = run_cli(data_dir, "results", "--min-confidence", "0.8")
    kept = [json.loads(line) for line in high.stdout.splitlines()]
    assert all(r["confidence"] >= 0.8 for r in kept)
    assert len(kept) < len(done) and f"{len(kept)} judgments with confidence >= 0.8" in high.stderr
    # verdicts judged from now on carry the calibrated confidence
    judged = run_cli(
        data_dir, "judge", "--user", "user_00", "--prompt", "again", "--json", *_two_images(data_dir)
    )
    row = json.loads(judged.stdout)
    if row["winner"] in ("A", "B"):
        assert row["calibration_version"] == version and row["confidence_raw"] is not None


def _two_images(data_dir: Path) -> list[str]:
    images = sorted((data_dir / "images").rglob("img_*.png"))
    return [str(images[0]), str(images[1])]
