"""bench/hf_throughput.py: the tiny CPU smoke run measures both batch kinds fairly and prints its summary."""

from __future__ import annotations

import pytest

from bench import hf_throughput


@pytest.mark.slow
def test_tiny_cpu_smoke_summary(capsys: pytest.CaptureFixture[str]) -> None:
    report = hf_throughput.main(["--shape", "tiny", "--batch", "4", "--gen-tokens", "16", "--device", "cpu"])
    out = capsys.readouterr().out
    summary = out[out.index(" SUMMARY ") :]

    assert [k.kind for k in report.kinds] == ["one-user", "mixed-user"]
    for kind in ("one-user", "mixed-user"):
        assert f"batch kind: {kind}" in summary
    assert "3 repeats per mode" in summary
    assert "batch:     4 generations = 2 judgments, swap on" in summary
    assert "device:" in summary and "shape:     tiny" in summary

    blocks = summary.split("batch kind: ")[1:]
    assert len(blocks) == 2
    for k, block in zip(report.kinds, blocks, strict=True):
        assert block.startswith(k.kind)
        assert "every row of every run generated exactly 16 tokens" in block
        assert k.short_rows(16) == []
        assert k.batch == 4 and k.swap and k.judgments == 2
        assert list(k.modes) == ["plain", "shared-prefix", "static-cache"]
        for mode, m in k.modes.items():
            assert len(m.runs) == 3
            for run in m.runs:
                assert all(len(row) == 16 for row in run.tokens)  # min = max new tokens
                assert run.total == pytest.approx(run.pre + run.prefill + run.decode + run.post)
                assert min(run.pre, run.prefill, run.decode, run.post) >= 0
            assert k.tokens_match(mode) is True, mode
            assert k.judgments_per_s(mode) == pytest.approx(k.gen_per_s(mode) / 2)
            line = next(line for line in block.splitlines() if line.strip().startswith(mode + " "))
            assert line.rstrip().endswith("True (4/4 rows)")
            cols = line.split()
            # mode, total, [min, max], prefill, decode, TTFT, preproc, gen/s, judgm/s, cached, tokens = plain
            assert float(cols[9]) == pytest.approx(float(cols[8]) / 2, abs=0.011)  # judgm/s = gen/s / 2

    one_user, mixed = report.kinds
    # the one-user batch shares the user's context; the mixed-user batch only the instructions
    assert one_user.common_prefix > mixed.common_prefix > 0
    assert one_user.modes["shared-prefix"].runs[0].cached == one_user.common_prefix
    assert mixed.modes["shared-prefix"].runs[0].cached in (0, mixed.common_prefix)
    assert one_user.modes["plain"].runs[0].cached == 0
