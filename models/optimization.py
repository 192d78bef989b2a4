"""Prompt-optimization runs: their rounds, candidates and the judgments between candidates."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from core.enums import FINISHED_RUNS, RunStatus, Winner
from models.judgments import dimensions_of
from models.tables import (
    Judgment,
    OptimizationCandidate,
    OptimizationPair,
    OptimizationRun,
    id_of,
    utcnow,
)
from models.tenants import ensure_tenant, tenant_name


def create_run(
    *,
    session: Session,
    tenant: str,
    user: str,
    base_prompt: str,
    backend: str,
    rewriter: str,
    generator: str,
    rounds: int,
    k: int,
    options: dict[str, Any],
) -> OptimizationRun:
    tenant_row = ensure_tenant(session=session, name=tenant)
    run = OptimizationRun(
        tenant_id=id_of(tenant_row),
        user_ref=user,
        base_prompt=base_prompt,
        backend=backend,
        rewriter=rewriter,
        generator=generator,
        rounds=rounds,
        k=k,
        options=options,
    )
    session.add(run)
    session.flush()
    return run


def start_run(*, session: Session, run_id: int) -> tuple[OptimizationRun, str]:
    """Mark a recorded run `running`; a detached copy of its row and its tenant's name."""
    run = session.get(OptimizationRun, run_id)
    if run is None:
        raise LookupError(f"optimization run {run_id} does not exist")
    run.status = RunStatus.running
    session.add(run)
    return run.model_copy(), tenant_name(session=session, tenant_id=run.tenant_id)


def get_run(*, session: Session, run_id: int) -> OptimizationRun | None:
    return session.get(OptimizationRun, run_id)


def add_candidate(
    *, session: Session, run_id: int, round: int, prompt: str, image_uri: str, seed: int
) -> int:
    row = OptimizationCandidate(run_id=run_id, round=round, prompt=prompt, image_uri=image_uri, seed=seed)
    session.add(row)
    session.flush()
    return id_of(row)


def record_pair(
    *,
    session: Session,
    run_id: int,
    round: int,
    candidate_a: int,
    candidate_b: int,
    judgment_id: int,
    winner: Winner | None,
) -> None:
    session.add(
        OptimizationPair(
            run_id=run_id,
            round=round,
            candidate_a_id=candidate_a,
            candidate_b_id=candidate_b,
            judgment_id=judgment_id,
            winner=winner,
        )
    )
    for cid, score in ((candidate_a, _score(winner, Winner.A)), (candidate_b, _score(winner, Winner.B))):
        cand = session.get(OptimizationCandidate, cid)
        if score is None or cand is None:
            continue
        cand.wins += score
        cand.games += 1
        session.add(cand)


def _score(winner: Winner | None, side: Winner) -> float | None:
    """Win-count scoring: a win 1, a tie or disagreeing orders 0.5, an invalid judgment not a game."""
    if winner in (Winner.A, Winner.B):
        return 1.0 if winner == side else 0.0
    if winner in (Winner.tie, Winner.inconsistent):
        return 0.5
    return None


def export_pairs(*, session: Session, run_id: int) -> list[dict[str, Any]]:
    """Preferred/rejected prompt pairs of a run, with the judge's evidence: DPO training rows."""
    run = session.get(OptimizationRun, run_id)
    if run is None:
        return []
    candidates = {
        c.id: c
        for c in session.exec(select(OptimizationCandidate).where(OptimizationCandidate.run_id == run_id))
    }
    pairs = session.exec(
        select(OptimizationPair).where(OptimizationPair.run_id == run_id).order_by(col(OptimizationPair.id))
    )
    rows = []
    for pair in pairs:
        if pair.winner not in (Winner.A, Winner.B):
            continue
        a, b = candidates[pair.candidate_a_id], candidates[pair.candidate_b_id]
        chosen, rejected = (a, b) if pair.winner == Winner.A else (b, a)
        if chosen.prompt == rejected.prompt:
            continue
        judgment = session.get(Judgment, pair.judgment_id)
        dims = dimensions_of(session=session, judgment_id=pair.judgment_id)
        better = [
            d.reason or d.name
            for d in dims
            if (d.score_a > d.score_b if pair.winner == Winner.A else d.score_b > d.score_a)
        ]
        rows.append(
            {
                "prompt": run.base_prompt,
                "chosen": chosen.prompt,
                "rejected": rejected.prompt,
                "user": run.user_ref,
                "evidence": better,
                "round": pair.round,
                "judgment_id": pair.judgment_id,
                "judge_model": judgment.judge_model if judgment else None,
                # the judgment's confidence is this pair's only while it still holds the pair's verdict
                "confidence": judgment.confidence if judgment and judgment.winner == pair.winner else None,
                "calibration_version": judgment.calibration_version
                if judgment and judgment.winner == pair.winner
                else None,
            }
        )
    return rows


def finish_run(*, session: Session, run_id: int, **values: Any) -> None:
    run = session.get(OptimizationRun, run_id)
    if run is None:
        return
    for key, value in values.items():
        setattr(run, key, value)
    if values.get("status") in FINISHED_RUNS:
        run.finished_at = utcnow()
    session.add(run)


def candidates_of(*, session: Session, run_id: int) -> list[OptimizationCandidate]:
    stmt = (
        select(OptimizationCandidate)
        .where(OptimizationCandidate.run_id == run_id)
        .order_by(col(OptimizationCandidate.id))
    )
    return list(session.exec(stmt))
