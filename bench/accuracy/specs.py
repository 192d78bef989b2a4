"""Backend specs: which judge configurations a benchmark run measures (``NAME[/PROTOCOL][:swap|:noswap]``).

Each spec is one method of the report: ``lite``, ``sglang`` or ``hf``; ``NAME/PROTOCOL`` picks an LVLM
protocol, ``NAME:swap`` / ``NAME:noswap`` forces judging both orders or one. Its verdicts are read from
the ledger (`bench.accuracy.queue`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.accuracy.baselines import BASELINES
from bench.accuracy.format import BenchmarkError


@dataclass(frozen=True)
class BackendSpec:
    """A judge configuration of the benchmark: ``NAME[/PROTOCOL][:swap|:noswap]``."""

    label: str
    name: str
    protocol: str | None = None
    swap: bool | None = None  # None: the settings' default (both orders on LVLM backends)

    @property
    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"backend": self.name}
        if self.protocol:
            opts["protocol"] = self.protocol
        if self.swap is not None:
            opts["swap"] = self.swap
        return opts


def parse_backend(text: str) -> BackendSpec:
    """``lite``, ``lite:swap``, ``sglang/json-v1``, ``hf:noswap`` ..."""
    from workers.backends import available_backends

    body, _, mode = text.strip().partition(":")
    name, _, protocol = body.partition("/")
    if name not in available_backends():
        raise BenchmarkError(
            f"unknown backend {name!r} in {text!r}; available: {', '.join(available_backends())}"
        )
    if mode not in ("", "swap", "noswap"):
        raise BenchmarkError(f"{text!r}: the part after ':' must be 'swap' or 'noswap'")
    if name in BASELINES:
        raise BenchmarkError(f"{name!r} is a baseline name")
    swap = None if not mode else mode == "swap"
    return BackendSpec(label=text.strip(), name=name, protocol=protocol or None, swap=swap)
