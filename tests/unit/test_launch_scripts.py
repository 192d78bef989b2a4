"""The GPU launch scripts in ops/ render the server command lines we mean, with pinned flags only.

SGLang and vLLM need CUDA, so neither is installed here: each script runs with a fake `python` first
on PATH that prints the offline variables and its argv, in a temp dir holding a fake
checkpoint (config.json, a safetensors index, two shards). Every `--flag` it passes must be one the
pinned server version's parser defines (tests/data/server_flags/, extracted from the released
packages), and the flags the deployment depends on must be there with sane values.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
FLAGS = ROOT / "tests" / "data" / "server_flags"

SGLANG = "sglang-0.5.23.txt"
ROUTER = "sglang-router-0.3.2.txt"
VLLM = "vllm-0.33.0.txt"

# Worst-case prompt + answer, in tokens (the arithmetic is in ops/sglang_judge.sh and sglang_reasoner.sh).
IMAGE_TOKENS = (448 // 14) ** 2 // 4 + 2  # 2x2-merged patches of a 448x448 image + vision start/end
JUDGE_WORST = 15 * 512 + 2 * IMAGE_TOKENS + 300 + 600 + 20 + 1701  # regenerated rationales, json-v1 answer
REASONER_WORST = 2 * IMAGE_TOKENS + 300 + 600 + 20 + 512  # a regenerated rationale

# script -> (server, flag lists, model variable, default served name, worst case)
SCRIPTS = {
    "sglang_judge.sh": ("sglang", (SGLANG,), "JUDGE_MODEL", "pigreward-judge", JUDGE_WORST),
    "sglang_reasoner.sh": ("sglang", (SGLANG,), "REASONER_MODEL", "pigreward-reasoner", REASONER_WORST),
    "sglang_router.sh": ("router", (SGLANG, ROUTER), "JUDGE_MODEL", "pigreward-judge", JUDGE_WORST),
    "vllm_judge.sh": ("vllm", (VLLM,), "JUDGE_MODEL", "pigreward-judge", JUDGE_WORST),
    "vllm_reasoner.sh": ("vllm", (VLLM,), "REASONER_MODEL", "pigreward-reasoner", REASONER_WORST),
}
MODULE = {
    "sglang": ["-m", "sglang.launch_server"],
    "router": ["-m", "sglang_router.launch_server"],
    "vllm": ["-m", "vllm.entrypoints.cli.main", "serve"],
}
CONTEXT_FLAG = {"sglang": "--context-length", "router": "--context-length", "vllm": "--max-model-len"}
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

# NUL-separated: the offline variables as NAME=value, a "--" marker, then argv (values stay exact).
FAKE_PYTHON = """#!/bin/sh
printf '%s\\0' {env} -- "$@"
"""


def flag_names(*files: str) -> set[str]:
    names: set[str] = set()
    for name in files:
        for line in (FLAGS / name).read_text().splitlines():
            if line and not line.startswith("#"):
                names.add(line)
    return names


def local_revision(ckpt: Path) -> str:
    """What ops/weights_revision.sh promises for a plain directory, computed independently."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        h.update(name.encode() + b"\0" + (ckpt / name).read_bytes() + b"\0")
    block = 1 << 20
    for shard in sorted(ckpt.glob("*.safetensors")):
        data, size = shard.read_bytes(), shard.stat().st_size
        h.update(f"{shard.name}\0{size}\n".encode())
        for offset in sorted({0, max(0, size // 2 - block // 2), max(0, size - block)}):
            h.update(data[offset : offset + block])
    return h.hexdigest()[:12]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON.format(env=" ".join(f'"{v}=${{{v}-unset}}"' for v in OFFLINE_VARS)))
    fake.chmod(0o755)
    ckpt = root / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["Qwen2VLForConditionalGeneration"]}))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "x"}}))
    (ckpt / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 64)
    (ckpt / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 32)
    (root / "home").mkdir()
    return root


def run(sandbox: Path, script: str, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """Run `script` in the sandbox; a variable given as None is left unset."""
    base: dict[str, str | None] = {
        "PATH": f"{sandbox / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(sandbox / "home"),  # no real HF cache
        SCRIPTS[script][2]: str(sandbox / "ckpt"),
    }
    merged = {k: v for k, v in {**base, **env}.items() if v is not None}
    return subprocess.run(
        ["bash", str(OPS / script), *args], env=merged, capture_output=True, text=True, timeout=30
    )


def launched(proc: subprocess.CompletedProcess[str]) -> tuple[list[str], dict[str, str]]:
    """The argv the fake `python` got, and the offline variables it saw."""
    assert proc.returncode == 0, proc.stderr
    fields = proc.stdout.split("\0")[:-1]
    marker = fields.index("--")
    env = dict(field.split("=", 1) for field in fields[:marker])
    return fields[marker + 1 :], env


def value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} given {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_flag_is_in_the_pinned_parser(sandbox: Path, script: str) -> None:
    server, lists, *_ = SCRIPTS[script]
    argv, _ = launched(run(sandbox, script, API_KEY="k", HOST="0.0.0.0"))
    assert argv[: len(MODULE[server])] == MODULE[server]
    known = flag_names(*lists)
    used = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    assert used, argv
    assert used <= known, f"not in {lists}: {sorted(used - known)}"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_key_flags_by_default(sandbox: Path, script: str) -> None:
    server, _, _, name, worst = SCRIPTS[script]
    argv, env = launched(run(sandbox, script))
    assert int(value(argv, CONTEXT_FLAG[server])) >= worst
    assert value(argv, "--host") == "127.0.0.1"
    assert "--api-key" not in argv and "--router-api-key" not in argv
    assert value(argv, "--served-model-name") == f"{name}@{local_revision(sandbox / 'ckpt')}"
    assert env == dict.fromkeys(OFFLINE_VARS, "1")
    if server == "vllm":
        template = Path(value(argv, "--chat-template"))
        assert template == OPS / "templates" / "qwen2_vl.jinja" and template.is_file()
        assert value(argv, "--chat-template-content-format") == "openai"
        assert json.loads(value(argv, "--limit-mm-per-prompt"))["image"] == 2
        assert "--enable-prompt-tokens-details" in argv
        assert value(argv, "--generation-config") == "vllm"
        assert json.loads(value(argv, "--structured-outputs-config")) == {"backend": "xgrammar"}
        assert argv[len(MODULE[server])] == str(sandbox / "ckpt")
    else:
        assert value(argv, "--chat-template") == "qwen2-vl"
        assert json.loads(value(argv, "--limit-mm-data-per-request")) == {"image": 2}
        assert {"--enable-cache-report", "--enable-metrics"} <= set(argv)
        assert value(argv, "--sampling-defaults") == "openai"
        assert value(argv, "--grammar-backend") == "xgrammar"
        assert value(argv, "--weight-version") == local_revision(sandbox / "ckpt")
        assert float(value(argv, "--mem-fraction-static")) == 0.85
        assert value(argv, "--model-path") == str(sandbox / "ckpt")
    if server == "router":
        assert value(argv, "--router-policy") == "cache_aware"
        assert int(value(argv, "--dp-size")) > 1
        assert value(argv, "--router-prometheus-host") == "127.0.0.1"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_api_key_overrides_and_passthrough(sandbox: Path, script: str) -> None:
    server = SCRIPTS[script][0]
    extra = ["--tensor-parallel-size", "2"] if server == "vllm" else ["--tp-size", "2"]
    proc = run(
        sandbox, script, *extra, API_KEY="s3cret", HOST="10.0.0.5", PORT="31234", CONTEXT_LENGTH="16384"
    )
    argv, _ = launched(proc)
    assert value(argv, "--api-key") == "s3cret"
    if server == "router":
        assert value(argv, "--router-api-key") == "s3cret"
        assert value(argv, "--router-prometheus-host") == "10.0.0.5"
    assert value(argv, "--host") == "10.0.0.5"
    assert value(argv, "--port") == "31234"
    assert value(argv, CONTEXT_FLAG[server]) == "16384"
    assert argv[-2:] == extra


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::"])
def test_public_host_without_api_key_refuses(sandbox: Path, script: str, host: str) -> None:
    proc = run(sandbox, script, HOST=host)
    assert proc.returncode != 0
    assert proc.stdout == ""  # the server was never started
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "API_KEY" in lines[0] and host in lines[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_hosts_need_no_key(sandbox: Path, host: str) -> None:
    argv, _ = launched(run(sandbox, "sglang_judge.sh", HOST=host))
    assert value(argv, "--host") == host


def test_revision_of_a_snapshot_and_of_a_cached_hub_id(sandbox: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--jeongeunnn--pigreward"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    argv, _ = launched(run(sandbox, "vllm_judge.sh", JUDGE_MODEL=str(snapshot)))
    assert value(argv, "--served-model-name") == f"pigreward-judge@{commit}"

    # The default hub id, resolved offline through the HF cache; the id itself is what is served.
    proc = run(sandbox, "sglang_judge.sh", JUDGE_MODEL=None, HF_HUB_CACHE=str(tmp_path / "hub"))
    argv, _ = launched(proc)
    assert value(argv, "--model-path") == "jeongeunnn/pigreward"
    assert value(argv, "--served-model-name") == f"pigreward-judge@{commit}"

    argv, _ = launched(run(sandbox, "sglang_judge.sh", WEIGHTS_REVISION="v7", SERVED_NAME="judge"))
    assert value(argv, "--served-model-name") == "judge@v7"


def test_missing_weights_fail_with_one_line(sandbox: Path, tmp_path: Path) -> None:
    proc = run(sandbox, "sglang_reasoner.sh", REASONER_MODEL=str(tmp_path / "nowhere"))
    assert proc.returncode != 0 and proc.stdout == ""
    assert "nowhere" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(sandbox, "vllm_reasoner.sh", REASONER_MODEL=str(empty))
    assert proc.returncode != 0 and "config.json" in proc.stderr


def test_revision_follows_the_weights(sandbox: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in (sandbox / "ckpt").iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    before = value(launched(run(sandbox, "sglang_judge.sh", JUDGE_MODEL=str(ckpt)))[0], "--weight-version")
    shard = ckpt / "model-00002-of-00002.safetensors"
    size = shard.stat().st_size
    shard.write_bytes(b"\0" * 33)
    after = value(launched(run(sandbox, "sglang_judge.sh", JUDGE_MODEL=str(ckpt)))[0], "--weight-version")
    assert before != after and len(after) == 12
    # retrained: the same shapes, so the same sizes, other bytes
    shard.write_bytes(bytes([7]) * size)
    retrained = value(launched(run(sandbox, "sglang_judge.sh", JUDGE_MODEL=str(ckpt)))[0], "--weight-version")
    assert retrained not in (before, after) and shard.stat().st_size == size


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_are_strict_and_exec(script: str) -> None:
    text = (OPS / script).read_text()
    assert "set -euo pipefail" in text
    assert "\nexec python -m " in text
    assert text.rstrip().endswith('"$@"')
    first = {"sglang": "sglang", "router": "sglang-router", "vllm": "vllm"}[SCRIPTS[script][0]]
    assert f"Flags checked against {first} " in text


def test_flag_lists_are_plain_names() -> None:
    for name in (SGLANG, ROUTER, VLLM):
        lines = (FLAGS / name).read_text().splitlines()
        header = [line for line in lines if line.startswith("#")]
        names = [line for line in lines if line and not line.startswith("#")]
        assert header and lines[: len(header)] == header
        assert names == sorted(set(names)) and all(n.startswith("--") and " " not in n for n in names)
    assert flag_names(SGLANG).isdisjoint(flag_names(ROUTER))


def test_template_renders_the_qwen2_vl_chat_format() -> None:
    import jinja2  # transformers' chat templates need it: always installed

    template = jinja2.Environment().from_string((OPS / "templates" / "qwen2_vl.jinja").read_text())
    parts = [
        {"type": "image"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "Q"},
    ]
    text = template.render(messages=[{"role": "user", "content": parts}], add_generation_prompt=True)
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{image}{image}Q<|im_end|>\n<|im_start|>assistant\n"
    )
    text = template.render(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "u"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n"
