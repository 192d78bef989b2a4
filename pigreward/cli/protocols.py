"""`pigreward parse`: read one raw model output the way the workers do (debug a template's outputs)."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from core.enums import Outcome, Winner
from workers.generation import Generation
from workers.protocols import PROTOCOLS, get_protocol

_WINNERS = {Winner.A: "1", Winner.B: "2", Winner.tie: "tie", None: None}


def _num(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


@click.command()
@click.option(
    "--protocol",
    type=click.Choice(sorted(PROTOCOLS)),
    default="pigreward-v1",
    show_default=True,
    help="Which output format to read.",
)
@click.option(
    "--finish-reason", default="stop", show_default=True, help="As the server reported it (length = cut off)."
)
@click.argument("file", type=click.File("r", encoding="utf-8"))
def parse(protocol: str, finish_reason: str, file: TextIO) -> None:
    """Parse one raw model output (FILE, or - for stdin) and print the result as JSON.

    Exits 1 when the output is invalid, so scripts can check templates in bulk.
    """
    result = get_protocol(protocol).parse(Generation(text=file.read(), finish_reason=finish_reason))
    valid = result.outcome == Outcome.valid
    out = {
        "outcome": str(result.outcome),
        "reason": result.invalid_reason,
        "detail": result.invalid_detail,
        "dimensions": [
            {"name": d.name, "score_1": _num(d.score_a), "score_2": _num(d.score_b), "reason": d.reason}
            for d in result.dimensions
        ],
        "totals": {"1": _num(result.total_a), "2": _num(result.total_b)} if valid else None,
        "winner": _WINNERS[result.winner],
    }
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    if not valid:
        sys.exit(1)
