"""`pigreward judge`: one pair judged right here (no worker needed), printed as a dimension table."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any, TextIO

import click

from core.enums import JudgmentStatus
from core.errors import TransientError
from core.requests import InvalidJudgmentRequest
from core.settings import get_settings
from models.claims import release_judgment
from models.db import session_scope
from models.judgments import dimensions_of, get_judgment, list_judgments
from models.tables import DimensionScore, Judgment, id_of
from models.tenants import find_tenant
from pigreward.cli.common import BACKEND_CHOICES, PROTOCOL_CHOICES, as_uri, migrated_db
from tasks.runtime import get_resources
from tasks.submit import commit_judgments, judgment_spec
from workers.pipeline import run_judgment


@click.command()
@click.option("--user", required=True, help="The end user's external id.")
@click.option("--prompt", required=True, help="The prompt both images were generated for.")
@click.option(
    "--backend", type=click.Choice(BACKEND_CHOICES), default=None, help="Judge backend (default: settings)."
)
@click.option("--protocol", type=click.Choice(PROTOCOL_CHOICES), default=None, help="LVLM protocol.")
@click.option(
    "--swap/--no-swap", default=None, help="Judge both orders (default: on for LVLM backends, off for lite)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored judgment as JSON.")
@click.argument("image_a")
@click.argument("image_b")
def judge(
    user: str,
    prompt: str,
    backend: str | None,
    protocol: str | None,
    swap: bool | None,
    as_json: bool,
    image_a: str,
    image_b: str,
) -> None:
    """Judge one pair (local files or URIs) for USER and print the dimension table."""
    db = migrated_db()
    res = get_resources()
    options: dict[str, Any] = {}
    if swap is not None:
        options["swap"] = swap
    if backend:
        options["backend"] = backend
    if protocol:
        options["protocol"] = protocol
    store = res.loader.store
    try:
        spec = judgment_spec(user, prompt, as_uri(image_a, store), as_uri(image_b, store), options)
    except InvalidJudgmentRequest as exc:
        raise click.UsageError(str(exc)) from None
    [judgment_id] = commit_judgments([spec])
    token = f"cli-{uuid.uuid4()}"
    try:
        run_judgment(res=res, judgment_id=judgment_id, token=token, park=False)
    except TransientError as exc:
        with session_scope(db) as session:
            release_judgment(session=session, judgment_id=judgment_id, token=token)
        raise click.ClickException(f"judgment {judgment_id} not finished, try again later: {exc}") from exc
    with session_scope(db) as session:
        row = get_judgment(session=session, judgment_id=judgment_id)
        dims = dimensions_of(session=session, judgment_id=judgment_id)
    assert row is not None
    if as_json:
        out = row.model_dump(mode="json")
        out["dimensions"] = [d.model_dump(mode="json", exclude={"id", "judgment_id"}) for d in dims]
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(render_judgment(row, dims))
    if row.status != JudgmentStatus.done:
        sys.exit(1)


def render_judgment(row: Judgment, dims: list[DimensionScore]) -> str:
    lines = [f"judgment {row.id}  user {row.user_ref}  status {row.status}"]
    if row.status in (JudgmentStatus.rejected, JudgmentStatus.failed):
        lines.append(f"error [{row.error_code}]: {row.error}")
        return "\n".join(lines)
    if row.status == JudgmentStatus.invalid:
        lines.append(f"invalid output ({row.invalid_reason}); raw text:")
        lines.extend(row.raw_outputs)
        return "\n".join(lines)
    width = max([len(d.name) for d in dims] + [9])
    lines.append(f"{'dimension':<{width}}  {'A':>7}  {'B':>7}  reason")
    for d in dims:
        lines.append(f"{d.name:<{width}}  {d.score_a:>7.2f}  {d.score_b:>7.2f}  {d.reason}")
    lines.append(f"{'total':<{width}}  {row.total_a or 0:>7.2f}  {row.total_b or 0:>7.2f}")
    lines.append(
        f"winner: {row.winner}   ({row.judge_model} rev {row.model_revision}, {row.template_version})"
    )
    lines.append(confidence_line(row))
    if row.rationale:
        lines.append(f"rationale: {row.rationale}")
    return "\n".join(lines)


def confidence_line(row: Judgment) -> str:
    """How sure the verdict is, and whether that figure is calibrated for this model version."""
    if row.confidence is None:
        return "confidence: none (no winner stated)"
    source = (row.confidence_signals or {}).get("source", "?")
    how = f"calibrated {row.calibration_version}" if row.calibration_version else "uncalibrated"
    return f"confidence: {row.confidence:.2f} that the user prefers {row.winner} ({how}; from {source})"


@click.command()
@click.option("--batch", "batch_id", type=click.IntRange(min=1), default=None, help="Only this batch.")
@click.option("--user", default=None, help="Only this end user.")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Only verdicts at least this confident (ties and invalid outputs have no confidence: left out).",
)
@click.option("--limit", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("-o", "--output", type=click.File("w"), default="-", help="JSONL file (default stdout).")
def results(
    batch_id: int | None, user: str | None, min_confidence: float | None, limit: int, output: TextIO
) -> None:
    """Finished judgments as JSONL (winner, totals, confidence and its calibration), e.g. one batch's
    verdicts the user can trust: `pigreward results --batch 7 --min-confidence 0.8`."""
    settings = get_settings()
    with session_scope(migrated_db()) as session:
        tenant = find_tenant(session=session, name=settings.default_tenant)
        rows = (
            list_judgments(
                session=session,
                tenant_id=id_of(tenant),
                user=user,
                batch_id=batch_id,
                limit=limit,
                min_confidence=min_confidence,
            )
            if tenant is not None
            else []
        )
    for row in rows:
        output.write(json.dumps(result_line(row), ensure_ascii=False) + "\n")
    kept = "" if min_confidence is None else f" with confidence >= {min_confidence:g}"
    click.echo(f"{len(rows)} judgments{kept}", err=True)


def result_line(row: Judgment) -> dict[str, Any]:
    return {
        "id": row.id,
        "batch_id": row.batch_id,
        "user": row.user_ref,
        "prompt": row.prompt,
        "image_a": row.image_a_uri,
        "image_b": row.image_b_uri,
        "status": row.status,
        "winner": row.winner,
        "total_a": row.total_a,
        "total_b": row.total_b,
        "confidence": row.confidence,
        "calibration_version": row.calibration_version,
        "judge_model": row.judge_model,
        "model_revision": row.model_revision,
    }
