"""`pigreward bench optimize`: does personalized prompt optimization make images this user prefers?

Simulated users from the synthetic generator (hidden taste known, defined on drawing parameters)
get their references registered; each run optimizes a base prompt with the CPU modifier rewriter,
the procedural generator and the `lite` judge through the queue. Held-out comparisons then draw the
final prompt and the base prompt on fresh seeds, and the HIDDEN taste (not the judge) says which image
the user prefers. Goal: the final prompt wins at least 70% of held-out comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.enums import RunStatus
from core.settings import Settings
from models.db import upgrade
from pigreward import synthetic
from pigreward.demo import register_synthetic_users
from pigreward.progress import bar, wait_for_run
from tasks.embedded import worker_if_embedded
from tasks.runtime import get_db
from tasks.submit import submit_optimization
from workers.optimization.generators import draw_params

BASE_PROMPTS = ("a quiet harbour at dawn", "a bowl of fruit on a table", "a city street after rain")


@dataclass
class UserOutcome:
    user: str
    base_prompt: str
    best_prompt: str
    judge_win_rate: float | None
    hidden_win_rate: float
    comparisons: int
    rounds: int


def hidden_win_rate(taste: dict[str, float], best: str, base: str, seeds: range) -> float:
    """Share of fresh seeds where the hidden taste prefers the best prompt's image (ties count half)."""
    score = 0.0
    for seed in seeds:
        u_best = synthetic.utility(taste, draw_params(best, seed))
        u_base = synthetic.utility(taste, draw_params(base, seed))
        score += 1.0 if u_best > u_base else 0.5 if u_best == u_base else 0.0
    return score / len(seeds)


def run_bench(
    settings: Settings,
    *,
    users: int = 6,
    rounds: int = 3,
    k: int = 4,
    held_out: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> list[UserOutcome]:
    upgrade(settings.resolved_database_url)
    data = synthetic.generate(
        settings.resolved_image_root / "bench-optimize", users=users, images=120, seed=seed
    )
    db = get_db()
    tenant = "bench-optimize"
    register_synthetic_users(data, tenant=tenant, uri_prefix="file://bench-optimize/")
    outcomes = []
    with worker_if_embedded(), bar(len(data.users), "optimizing", progress, unit="user") as pbar:
        for n, u in enumerate(data.users):
            base = BASE_PROMPTS[n % len(BASE_PROMPTS)]
            run_id, _ = submit_optimization(
                user=u.user_id, prompt=base, rounds=rounds, k=k, tenant=tenant, backend="lite", seed=seed + n
            )
            run = wait_for_run(db, run_id)
            if run.status == RunStatus.failed:
                raise RuntimeError(f"optimization {run_id} failed: {run.error}")
            best = run.best_prompt or base
            outcomes.append(
                UserOutcome(
                    u.user_id,
                    base,
                    best,
                    run.best_win_rate,
                    hidden_win_rate(u.taste, best, base, range(10_000, 10_000 + held_out)),
                    held_out,
                    run.rounds_done,
                )
            )
            pbar.update(1)
    return outcomes


def render(outcomes: list[UserOutcome]) -> str:
    lines = [f"{'user':<9}{'rounds':>7}{'judge':>8}{'hidden':>8}  best prompt"]
    for o in outcomes:
        judge = f"{100 * o.judge_win_rate:.0f}%" if o.judge_win_rate is not None else "-"
        lines.append(f"{o.user:<9}{o.rounds:>7}{judge:>8}{100 * o.hidden_win_rate:>7.0f}%  {o.best_prompt}")
    total = sum(o.comparisons for o in outcomes)
    overall = sum(o.hidden_win_rate * o.comparisons for o in outcomes) / total if total else 0.0
    lines += [
        "",
        f"held-out comparisons: {total} (final prompt vs base prompt, fresh seeds, judged by each user's hidden taste)",
        f"final prompt preferred: {100 * overall:.1f}% (goal: at least 70%)",
    ]
    return "\n".join(lines)
