"""Prompt-optimization task (queue `optimize`): the run row is written first, then the message.

`optimize_prompt.delay(user, prompt, rounds=3, k=4, ...)` goes through `tasks.submit` like
`judge.delay`: the run row holds everything needed to run it, and the message carries its id alone.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.result import AsyncResult

from core.enums import RunStatus
from core.settings import get_settings
from models.db import session_scope
from models.optimization import finish_run
from tasks.app import app
from tasks.config import image_generator, rewriter
from tasks.judgments import LedgerTask
from tasks.runtime import get_resources
from tasks.submit import submit_optimization
from workers.optimization.rounds import OptimizeConfig, run_optimization

log = logging.getLogger(__name__)


class OptimizeTask(LedgerTask):
    """A run is never retried as a whole: its judgments and images retry on their own."""

    row_arg = "run_id"
    autoretry_for = ()

    def submit(
        self,
        user: str,
        prompt: str,
        rounds: int = 3,
        k: int = 4,
        tenant: str | None = None,
        backend: str | None = None,
        options: dict[str, Any] | None = None,
        eval_seeds: int = 8,
        seed: int = 0,
        *,
        send_options: dict[str, Any],
    ) -> AsyncResult[Any]:
        _, message = submit_optimization(
            user=user,
            prompt=prompt,
            rounds=rounds,
            k=k,
            tenant=tenant,
            backend=backend,
            options=options,
            eval_seeds=eval_seeds,
            seed=seed,
            **send_options,
        )
        return message


@app.task(bind=True, base=OptimizeTask, name="pigreward.optimize_prompt", max_retries=0)
def optimize_prompt(self: OptimizeTask, run_id: int) -> dict[str, Any]:
    """Run one optimization to its end; failures are recorded on the run row."""
    settings = get_settings()
    res = get_resources()
    try:
        result = run_optimization(
            res=res,
            run_id=run_id,
            rewriter=rewriter(settings),
            generator=image_generator(settings, res.loader.store),
            config=OptimizeConfig(image_prefix=settings.optimize_output),
        )
    except Exception as exc:
        log.exception("optimization %s failed", run_id)
        with session_scope(res.db) as session:
            finish_run(
                session=session, run_id=run_id, status=RunStatus.failed, error=f"{type(exc).__name__}: {exc}"
            )
        raise
    return {
        "run_id": run_id,
        "best_prompt": result.best_prompt,
        "best_win_rate": result.best_win_rate,
        "rounds_done": result.rounds_done,
    }
