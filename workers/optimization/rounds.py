"""Personalized prompt optimization: PIGReward's verdicts as a user-conditioned reward.

Rounds: propose K rewrites of the prompt from the user's context → generate an image per candidate
(same seed within a round, so only the prompt differs) → judge every pair for this user through the
ledger → rank by win counts → feed the losers' weak dimensions back into the next round's rewrites →
stop after R rounds or when the incumbent keeps its place. Finally the best prompt is judged against
the base prompt on fresh seeds; its win rate is stored with the run. Every candidate, image and
judgment is stored (through `models.optimization`); decisive pairs export as DPO rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from core.enums import JudgmentStatus, RunStatus, Winner
from core.errors import TransientError
from models.batches import record_batch
from models.db import session_scope
from models.judgments import JudgmentSpec, dimensions_of
from models.optimization import add_candidate, finish_run, record_pair, start_run
from models.tables import OptimizationRun
from workers.optimization.generators import ImageGenerator
from workers.optimization.rewriters import Feedback, Rewriter
from workers.pipeline import Resources, database_errors, ensure_context, resolve_user, run_judgment
from workers.schemas import ContextData

log = logging.getLogger(__name__)

JUDGE_OPTIONS = ("swap", "protocol")
"""The run options that are judge options (the rest, eval_seeds and seed, steer the run itself)."""


@dataclass(frozen=True)
class OptimizeConfig:
    """How a worker runs optimizations. A run's own `eval_seeds` and `seed` live on its row."""

    image_prefix: str = "file://optimize"  # where images go: file:// under the root, or s3://bucket/prefix
    concurrency: int = 8  # judgments of a round run at once (keeps an LVLM server busy)
    generate_timeout_s: float = 600.0  # how long to wait for an image that is not there yet (external mode)
    poll_s: float = 2.0
    eval_seeds: int = 8  # for runs whose row does not say (fresh images per side, best vs base)
    seed: int = 0


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


@dataclass
class _Candidate:
    id: int
    prompt: str
    uri: str


@dataclass
class _RoundOutcome:
    candidates: list[_Candidate]
    wins: list[float]
    games: list[int]
    feedback: list[Feedback]

    def best(self) -> int:
        """The candidate with the best win rate; the earliest (the incumbent first) on ties."""
        return max(
            range(len(self.candidates)),
            key=lambda n: (self.wins[n] / self.games[n] if self.games[n] else 0.0, -n),
        )


class _Optimization:
    """One run in progress: its row, the user's context, and the steps of a round."""

    def __init__(
        self,
        res: Resources,
        run: OptimizationRun,
        tenant: str,
        generator: ImageGenerator,
        config: OptimizeConfig,
    ) -> None:
        assert run.id is not None
        self.res, self.run, self.run_id, self.tenant = res, run, run.id, tenant
        self.generator, self.config = generator, config
        self.eval_seeds = int(run.options.get("eval_seeds", config.eval_seeds))
        self.seed = int(run.options.get("seed", config.seed))
        self.judge_options = {k: v for k, v in run.options.items() if k in JUDGE_OPTIONS}

    def context(self) -> ContextData:
        backend = self.res.backend_for(self.run.backend, self.run.options.get("protocol"))
        user = resolve_user(db=self.res.db, tenant=self.tenant, user=self.run.user_ref)
        assert user.id is not None
        return ensure_context(res=self.res, backend=backend, user_id=user.id)[1]

    def generate(self, prompt: str, seed: int, uri: str) -> str:
        """Generate, waiting out transient errors (an external generator still rendering) up to the timeout."""
        deadline = time.monotonic() + self.config.generate_timeout_s
        while True:
            try:
                return self.generator.generate(prompt, seed, uri)
            except TransientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.config.poll_s)

    def judge_pairs(self, name: str, pairs: list[tuple[str, str]]) -> list[tuple[int, Winner | None]]:
        """Judge (image_a, image_b) pairs for this user through the ledger: (judgment id, winner or None)."""
        specs = [
            JudgmentSpec(
                tenant=self.tenant,
                user=self.run.user_ref,
                prompt=self.run.base_prompt,
                image_a=a,
                image_b=b,
                backend=self.run.backend,
                options=self.judge_options,
            )
            for a, b in pairs
        ]
        with session_scope(self.res.db) as session:
            _, ids = record_batch(
                session=session, tenant=self.tenant, name=name, specs=specs, kind="optimize"
            )

        def run(judgment_id: int) -> tuple[int, Winner | None]:
            summary = run_judgment(
                res=self.res, judgment_id=judgment_id, token=f"opt-{self.run_id}-{judgment_id}", park=False
            )
            return judgment_id, summary.winner if summary.status == JudgmentStatus.done else None

        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(pool.map(run, ids))

    def play_round(self, round_index: int, prompts: list[str]) -> _RoundOutcome:
        """Candidates recorded, their images generated, every pair judged, wins counted."""
        seed = self.seed * 1000 + round_index
        # recorded before their images exist: an external generator reads them to know what to render where
        with session_scope(self.res.db) as session:
            cands = []
            for i, prompt in enumerate(prompts):
                uri = f"{self.config.image_prefix}/{self.run_id}/r{round_index}-c{i}.png"
                cid = add_candidate(
                    session=session,
                    run_id=self.run_id,
                    round=round_index,
                    prompt=prompt,
                    image_uri=uri,
                    seed=seed,
                )
                cands.append(_Candidate(cid, prompt, uri))
        for cand in cands:
            self.generate(cand.prompt, seed, cand.uri)
        index_pairs = [(i, j) for i in range(len(cands)) for j in range(i + 1, len(cands))]
        verdicts = self.judge_pairs(
            f"optimize {self.run_id} round {round_index}",
            [(cands[i].uri, cands[j].uri) for i, j in index_pairs],
        )
        outcome = _RoundOutcome(cands, [0.0] * len(cands), [0] * len(cands), [])
        with session_scope(self.res.db) as session:
            for (i, j), (jid, winner) in zip(index_pairs, verdicts, strict=True):
                record_pair(
                    session=session,
                    run_id=self.run_id,
                    round=round_index,
                    candidate_a=cands[i].id,
                    candidate_b=cands[j].id,
                    judgment_id=jid,
                    winner=winner,
                )
                if winner is None:
                    continue
                outcome.games[i] += 1
                outcome.games[j] += 1
                if winner not in (Winner.A, Winner.B):  # a tie, or orders that disagree: half each
                    outcome.wins[i] += 0.5
                    outcome.wins[j] += 0.5
                    continue
                won, lost = (i, j) if winner == Winner.A else (j, i)
                outcome.wins[won] += 1
                weak = tuple(
                    d.name
                    for d in dimensions_of(session=session, judgment_id=jid)
                    if (d.score_b < d.score_a if lost == j else d.score_a < d.score_b)
                )
                outcome.feedback.append(Feedback(prompt=cands[lost].prompt, won=False, weak_dimensions=weak))
                outcome.feedback.append(Feedback(prompt=cands[won].prompt, won=True, weak_dimensions=()))
        return outcome

    def evaluate(self, best: str) -> tuple[float | None, int]:
        """The best prompt's win rate against the base prompt on fresh seeds, and how many verdicts count."""
        base = self.run.base_prompt
        if best == base or self.eval_seeds <= 0:
            return None, 0
        pairs = []
        for e in range(self.eval_seeds):
            seed = 1_000_000 + self.seed * 1000 + e
            prefix = f"{self.config.image_prefix}/{self.run_id}/eval{e}"
            pairs.append(
                (
                    self.generate(best, seed, f"{prefix}-best.png"),
                    self.generate(base, seed, f"{prefix}-base.png"),
                )
            )
        verdicts = self.judge_pairs(f"optimize {self.run_id} evaluation", pairs)
        scored = [
            1.0 if w == Winner.A else 0.0 if w == Winner.B else 0.5 for _, w in verdicts if w is not None
        ]
        return (sum(scored) / len(scored) if scored else None), len(scored)


def run_optimization(
    *,
    res: Resources,
    run_id: int,
    rewriter: Rewriter,
    generator: ImageGenerator,
    config: OptimizeConfig = OptimizeConfig(),
    progress: Callable[[str], None] | None = None,
) -> OptimizationResult:
    """Run an optimization whose row is recorded (`models.optimization.create_run`) to its end."""
    with database_errors(), session_scope(res.db) as session:
        run, tenant = start_run(session=session, run_id=run_id)
    opt = _Optimization(res, run, tenant, generator, config)
    context = opt.context()
    incumbent = run.base_prompt
    feedback: list[Feedback] = []
    history: list[list[tuple[str, float, int]]] = []
    rounds_done = 0
    for round_index in range(1, run.rounds + 1):
        proposals = rewriter.propose(
            run.base_prompt, context, feedback, run.k, round_index, opt.seed + round_index
        )
        outcome = opt.play_round(round_index, [incumbent, *[p for p in proposals if p != incumbent]])
        feedback = outcome.feedback
        history.append(
            [(c.prompt, outcome.wins[n], outcome.games[n]) for n, c in enumerate(outcome.candidates)]
        )
        best = outcome.best()
        rounds_done = round_index
        improved = outcome.candidates[best].prompt != incumbent
        incumbent = outcome.candidates[best].prompt
        with session_scope(res.db) as session:
            finish_run(session=session, run_id=run_id, rounds_done=rounds_done, best_prompt=incumbent)
        if progress:
            progress(
                f"round {round_index}: best {incumbent!r} ({outcome.wins[best]:g}/{outcome.games[best]} wins)"
            )
        if round_index > 1 and not improved:
            break  # the incumbent held: the search has stopped improving
    win_rate, comparisons = opt.evaluate(incumbent)
    with session_scope(res.db) as session:
        finish_run(
            session=session,
            run_id=run_id,
            status=RunStatus.done,
            best_prompt=incumbent,
            best_win_rate=win_rate,
            eval_comparisons=comparisons,
            rounds_done=rounds_done,
        )
    return OptimizationResult(run_id, incumbent, win_rate, comparisons, rounds_done, history)
