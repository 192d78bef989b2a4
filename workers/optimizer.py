"""Personalized prompt optimization: PIGReward's verdicts as a user-conditioned reward.

Rounds: propose K rewrites of the prompt from the user's context → generate an image per candidate
(same seed within a round, so only the prompt differs) → judge every pair for this user through the
ledger → rank by win counts → feed the losers' weak dimensions back into the next round's rewrites →
stop after R rounds or when the incumbent keeps its place. Finally the best prompt is judged against
the base prompt on fresh seeds; its win rate is stored with the run. Every candidate, image and
judgment is stored; decisive pairs export as DPO rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.db import session_scope
from models.ledger import JudgmentSpec, dimensions_of, record_batch
from models.optimization import add_candidate, finish_run, record_pair
from models.tables import OptimizationRun, Tenant
from workers.errors import TransientError
from workers.optimize.generators import ImageGenerator
from workers.optimize.rewriters import Feedback, Rewriter
from workers.pipeline import Resources, database_errors, ensure_context, resolve_user, run_judgment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizeConfig:
    eval_seeds: int = 8  # fresh images per side for the final best-vs-base comparison
    seed: int = 0
    image_prefix: str = (
        "file://optimize"  # where generated images go (file:// under the root, or s3://bucket/prefix)
    )
    concurrency: int = 8  # judgments of a round run at once (keeps an LVLM server busy)
    generate_timeout_s: float = 600.0  # how long to wait for an image that is not there yet (external mode)
    poll_s: float = 2.0


@dataclass
class OptimizationResult:
    run_id: int
    best_prompt: str
    best_win_rate: float | None
    eval_comparisons: int
    rounds_done: int
    history: list[list[tuple[str, float, int]]] = field(
        default_factory=list
    )  # per round: (prompt, wins, games)


def run_optimization(
    *,
    res: Resources,
    run_id: int,
    rewriter: Rewriter,
    generator: ImageGenerator,
    config: OptimizeConfig = OptimizeConfig(),
    progress: Callable[[str], None] | None = None,
) -> OptimizationResult:
    with database_errors(), session_scope(res.engine) as session:
        run = session.get(OptimizationRun, run_id)
        if run is None:
            raise LookupError(f"optimization run {run_id} does not exist")
        run.status = "running"
        session.add(run)
        tenant = session.get(Tenant, run.tenant_id).name  # type: ignore[union-attr]
        job = run.model_copy()
    options = dict(job.options)
    protocol = options.get("protocol")
    backend = res.backend_for(job.backend, protocol)
    user = resolve_user(engine=res.engine, tenant=tenant, user=job.user_ref)
    _, context = ensure_context(res=res, backend=backend, user_id=user.id)  # type: ignore[arg-type]
    judge_options = {k: v for k, v in options.items() if k in ("swap", "protocol")}

    def judge_pairs(name: str, pairs: list[tuple[str, str]]) -> list[tuple[int, str | None]]:
        """Judge (image_a, image_b) pairs for this user through the ledger; (judgment id, winner)."""
        specs = [
            JudgmentSpec(
                tenant=tenant,
                user=job.user_ref,
                prompt=job.base_prompt,
                image_a=a,
                image_b=b,
                backend=job.backend,
                options=judge_options,
            )
            for a, b in pairs
        ]
        with session_scope(res.engine) as session:
            _, ids = record_batch(session=session, tenant=tenant, name=name, specs=specs, kind="optimize")
        with ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool:
            summaries = list(
                pool.map(lambda jid: run_judgment(res=res, judgment_id=jid, token=f"opt-{run_id}-{jid}"), ids)
            )
        return [(s.judgment_id, s.winner if s.status == "done" else None) for s in summaries]

    incumbent = job.base_prompt
    feedback: list[Feedback] = []
    history: list[list[tuple[str, float, int]]] = []
    rounds_done = 0
    for round_index in range(1, job.rounds + 1):
        proposals = rewriter.propose(
            job.base_prompt, context, feedback, job.k, round_index, config.seed + round_index
        )
        prompts = [incumbent, *[p for p in proposals if p != incumbent]]
        seed = config.seed * 1000 + round_index
        # candidates are recorded before their images exist: an external generator reads them to know
        # which (prompt, seed) to render where
        cands = []
        with session_scope(res.engine) as session:
            for i, prompt in enumerate(prompts):
                uri = f"{config.image_prefix}/{run_id}/r{round_index}-c{i}.png"
                cid = add_candidate(
                    session=session, run_id=run_id, round=round_index, prompt=prompt, image_uri=uri, seed=seed
                )
                cands.append((cid, prompt, uri))
        for _, prompt, uri in cands:
            _generate(generator, prompt, seed, uri, config.generate_timeout_s, config.poll_s)
        index_pairs = [(i, j) for i in range(len(cands)) for j in range(i + 1, len(cands))]
        verdicts = judge_pairs(
            f"optimize {run_id} round {round_index}", [(cands[i][2], cands[j][2]) for i, j in index_pairs]
        )
        wins = [0.0] * len(cands)
        games = [0] * len(cands)
        feedback = []
        with session_scope(res.engine) as session:
            for (i, j), (jid, winner) in zip(index_pairs, verdicts, strict=True):
                record_pair(
                    session=session,
                    run_id=run_id,
                    round=round_index,
                    candidate_a=cands[i][0],
                    candidate_b=cands[j][0],
                    judgment_id=jid,
                    winner=winner,
                )
                if winner is None:
                    continue
                games[i] += 1
                games[j] += 1
                if winner in ("A", "B"):
                    w, lose = (i, j) if winner == "A" else (j, i)
                    wins[w] += 1
                    dims = dimensions_of(session=session, judgment_id=jid)
                    weak = tuple(
                        d.name
                        for d in dims
                        if (d.score_b < d.score_a if lose == j else d.score_a < d.score_b)
                    )
                    feedback.append(Feedback(prompt=cands[lose][1], won=False, weak_dimensions=weak))
                    feedback.append(Feedback(prompt=cands[w][1], won=True, weak_dimensions=()))
                else:
                    wins[i] += 0.5
                    wins[j] += 0.5
        history.append([(cands[n][1], wins[n], games[n]) for n in range(len(cands))])
        best = max(range(len(cands)), key=lambda n: (wins[n] / games[n] if games[n] else 0.0, -n))
        rounds_done = round_index
        improved = cands[best][1] != incumbent
        incumbent = cands[best][1]
        with session_scope(res.engine) as session:
            finish_run(session=session, run_id=run_id, rounds_done=rounds_done, best_prompt=incumbent)
        if progress:
            progress(f"round {round_index}: best {incumbent!r} ({wins[best]:g}/{games[best]} wins)")
        if round_index > 1 and not improved:
            break  # the incumbent held: the search has stopped improving

    win_rate, comparisons = None, 0
    if incumbent != job.base_prompt and config.eval_seeds > 0:
        pairs = []
        for e in range(config.eval_seeds):
            seed = 1_000_000 + config.seed * 1000 + e
            best_uri, base_uri = (
                _generate(
                    generator,
                    prompt,
                    seed,
                    f"{config.image_prefix}/{run_id}/eval{e}-{side}.png",
                    config.generate_timeout_s,
                    config.poll_s,
                )
                for prompt, side in ((incumbent, "best"), (job.base_prompt, "base"))
            )
            pairs.append((best_uri, base_uri))
        verdicts = judge_pairs(f"optimize {run_id} evaluation", pairs)
        scored = [1.0 if w == "A" else 0.0 if w == "B" else 0.5 for _, w in verdicts if w is not None]
        comparisons = len(scored)
        win_rate = sum(scored) / comparisons if comparisons else None
    with session_scope(res.engine) as session:
        finish_run(
            session=session,
            run_id=run_id,
            status="done",
            best_prompt=incumbent,
            best_win_rate=win_rate,
            eval_comparisons=comparisons,
            rounds_done=rounds_done,
        )
    return OptimizationResult(run_id, incumbent, win_rate, comparisons, rounds_done, history)


def _generate(
    generator: ImageGenerator, prompt: str, seed: int, uri: str, timeout_s: float, poll_s: float
) -> str:
    """Generate, waiting out transient errors (an external generator still rendering) up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return generator.generate(prompt, seed, uri)
        except TransientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(poll_s)
