"""Judging protocols: how a reference pair or a judgment is asked of an LVLM, and how answers are read.

- `pigreward-v1`: the released PIGReward checkpoints' text format (dimension lines, totals, verdict),
  read by a strict parser that reports `invalid` with a reason rather than guess.
- `json-v1`: the same information as JSON for instruction-tuned VLMs, enforced by the server's
  `response_format` and validated with pydantic; one repair retry on an invalid answer.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import InvalidRequest
from workers.protocols.json_v1 import JsonV1
from workers.protocols.pigreward_v1 import PigrewardV1
from workers.protocols.pigreward_v1_grammar import grammar_for
from workers.protocols.protocol import JudgeProtocol

PROTOCOLS: dict[str, type[JudgeProtocol]] = {"pigreward-v1": PigrewardV1, "json-v1": JsonV1}


def get_protocol(name: str, template_dir: Path | None = None, grammar: str = "off") -> JudgeProtocol:
    """A protocol by name; `grammar` (off | ebnf | regex) constrains `pigreward-v1` answers only
    (`json-v1` is constrained by its JSON schema)."""
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown protocol {name!r}; available: {', '.join(sorted(PROTOCOLS))}"
        ) from None
    return cls(template_dir, grammar_for(grammar) if cls is PigrewardV1 else None)


__all__ = ["PROTOCOLS", "JsonV1", "JudgeProtocol", "PigrewardV1", "get_protocol"]
